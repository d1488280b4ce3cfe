"""Atomic file writes: a reader (or a resumed run) never sees a half-written file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file the user's usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, data: Any, indent: int | None = 1) -> Path:
    """Write ``data`` as JSON atomically (see :func:`atomic_write_text`)."""
    return atomic_write_text(path, json.dumps(data, indent=indent))


def current_umask() -> int:
    """The process umask (read without changing it for long)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_folder(directory: str | Path, write: Callable[[Path], None], names: Sequence[str]) -> Path:
    """Let ``write`` fill a temporary folder beside ``directory`` with the files ``names``, then
    move them in: a new folder as a whole, an existing one file by file (each atomically), so
    a reader never sees a half-written artifact and the folder's other files are left alone."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        write(tmp)
        for name in names:
            os.chmod(tmp / name, 0o666 & ~current_umask())  # safetensors and mkstemp may write 0600
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700
        if directory.exists():
            for name in names:
                os.replace(tmp / name, directory / name)
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory
