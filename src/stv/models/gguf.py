"""GGUF checkpoints (llama.cpp's single-file format) as ordinary float model folders.

transformers dequantises a GGUF when it loads one (``gguf_file=``), which takes 20-75 s on
two CPU cores. We do that once per file: the float model and its tokenizer are saved as a
safetensors folder in the cache, keyed by the file's sha256, and every later load reads that
folder (about a second). The folder is built under a temporary name and renamed into place
only when complete; its marker file, written last, names every file it vouches for with its
size, so a killed conversion leaves nothing a later load trusts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

MARKER = "stv-gguf.json"
_STALE_SECONDS = 3600  # a temporary conversion folder this old belongs to a dead process


def cache_dir() -> Path:
    """``$STV_CACHE``, else ``$XDG_CACHE_HOME/stv``, else ``~/.cache/stv``."""
    if os.environ.get("STV_CACHE"):
        path = Path(os.environ["STV_CACHE"])
        if path.exists() and not path.is_dir():
            from ..errors import StvError

            raise StvError(f"STV_CACHE={path} is a file, not a folder; point it at a folder stv may write to")
        return path
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stv"


def find_gguf(path: str | Path, gguf_file: str | None = None) -> Path | None:
    """The GGUF file that ``path`` (a ``.gguf`` file, or a folder holding one, or a folder +
    ``gguf_file``) names; None when ``path`` is not a GGUF source."""
    path = Path(path)
    if gguf_file is not None:
        file = path / gguf_file if path.is_dir() else Path(gguf_file)
        if not file.is_file():
            raise FileNotFoundError(f"gguf_file {gguf_file!r} not found in {path}")
        return file
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir() and not (path / "config.json").is_file():
        found = sorted(path.glob("*.gguf"))
        if len(found) > 1:
            names = ", ".join(f.name for f in found)
            raise FileNotFoundError(
                f"{path} holds several GGUF files ({names}); pick one with gguf_file= / --gguf-file"
            )
        return found[0] if found else None
    return None


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _complete(folder: Path) -> bool:
    """True when ``folder``'s marker exists and every file it names has the size it recorded."""
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        files = json.loads(marker.read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return False
    return all((folder / name).is_file() and (folder / name).stat().st_size == size for name, size in files.items())


def converted_folder(gguf: str | Path, progress: bool = True) -> tuple[Path, str]:
    """(float model folder, sha256 of the GGUF): converted on first use, then cached."""
    gguf = Path(gguf)
    digest = sha256_file(gguf)
    message = f"converting {gguf.name} to float weights once" if progress else None
    folder = cached_build(
        "gguf", digest, lambda out: _convert(gguf, out, progress), message, {"source": str(gguf), "sha256": digest}
    )
    return folder, digest


def cached_build(
    kind: str, key: str, write: Callable[[Path], None], message: str | None = None, record: dict | None = None
) -> Path:
    """``cache_dir()/kind/key``, built by ``write(folder)`` on first use.

    Built under a temporary name and trusted only through a marker written last that lists
    every file with its size, so a killed build is never read; stale temporaries are removed."""
    root = cache_dir() / kind
    target = root / key
    if _complete(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob(f".{key}.*"):  # left by a killed build
        if time.time() - old.stat().st_mtime > _STALE_SECONDS:
            shutil.rmtree(old, ignore_errors=True)
    if message:
        print(f"{message} (cached in {target})", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        write(tmp)
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        (tmp / MARKER).write_text(json.dumps({**(record or {}), "files": files}, indent=1))
        if target.exists():  # an incomplete folder from an older version: never trusted, replaced
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _convert(gguf: Path, out: Path, progress: bool) -> None:
    """Dequantise through transformers' GGUF support and save a plain float folder."""
    try:
        import gguf as _  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise ImportError("reading GGUF files needs the `gguf` package: pip install gguf==0.19.0") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    if progress:
        logging.enable_progress_bar()  # the "de-quantizing GGUF tensors" bar
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are float now; transformers still marks the model as GGUF-quantised and
    # refuses to save it until that mark is cleared.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
