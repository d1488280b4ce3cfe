"""Models by short name that are assembled rather than downloaded (the labs, plug-ins).

A package registers its models through the ``stv.models`` entry-point group: each entry
point names a function that calls :func:`register_model`. stv's own labs register this way
(see ``pyproject.toml``), so the library never imports the experiment harness.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

ENTRY_POINT_GROUP = "stv.models"


@dataclass(frozen=True)
class RegisteredModel:
    """A model ``load_model(name)`` can build: ``resolve(progress)`` returns the folder to load
    and a weights fingerprint (None: hash the folder's weights)."""

    name: str
    description: str
    resolve: Callable[[bool], tuple[Path, str | None]]
    available: Callable[[], str] = lambda: "available"  # what `stv models` says about it
    folder: Path | None = None  # a fixed folder that settings.json names by ``name``


_MODELS: dict[str, RegisteredModel] = {}
_loaded_plugins = False


def register_model(model: RegisteredModel) -> None:
    """Make ``model.name`` loadable by name (a later registration of the same name wins)."""
    _MODELS[model.name] = model


def registered_models() -> dict[str, RegisteredModel]:
    """Every registered model, after the ``stv.models`` entry points have run once."""
    global _loaded_plugins
    if not _loaded_plugins:
        _loaded_plugins = True
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            entry.load()()
    return dict(_MODELS)


def registered(name: str) -> RegisteredModel | None:
    """The registered model called ``name``, or None."""
    return registered_models().get(name)


def name_of_folder(path: Path) -> str | None:
    """The registered name of a model whose fixed folder is ``path``, or None."""
    resolved = path.resolve()
    for model in registered_models().values():
        if model.folder is not None and model.folder.resolve() == resolved:
            return model.name
    return None
