"""What a resumable output depends on, stored beside it.

Every folder a run can resume into (eval predictions, a fit folder, a scan) holds a
``settings.json``: the model and its weights, the data, and every setting that changes the
numbers. Resuming with equal settings continues; with other settings it is refused with one
line naming what differs, so a number can never be computed under old settings and
reported under new ones.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import SettingsMismatchError, StvError
from ..io import atomic_write_json

SETTINGS_NAME = "settings.json"


def data_fingerprint(examples: Sequence) -> str:
    """What a list of examples holds, in order: ids, inputs, answers, choices, images (16 hex
    digits): an edited data file gives another fingerprint."""
    return hashlib.sha256("\n".join(example_digest(e) for e in examples).encode()).hexdigest()[:16]


def example_digest(example) -> str:
    """One example's id, question, answers, choices and images (their file, dataset row or
    pixels), hashed (16 hex digits)."""
    images = []
    for image in example.images:
        if hasattr(image, "tobytes"):  # an in-memory PIL image
            images.append(hashlib.sha256(image.tobytes()).hexdigest()[:16])
        else:
            images.append(str(getattr(image, "path", getattr(image, "index", image))))
    record = [example.id, example.question, list(example.answers), example.choices, images]
    return hashlib.sha256(json.dumps(record, default=str).encode()).hexdigest()[:16]


def unit_data(train: Sequence, test: Sequence) -> dict:
    """What a resumable (task, seed) unit was computed on: its training and test examples."""
    return {"train": data_fingerprint(train), "test": data_fingerprint(test)}


def model_label(name: str) -> str:
    """How settings name a model: a registered model's fixed folder by its name (the bundled lab checkpoint is "lab"), a local folder by its
    own name (the same checkpoint moved or cloned elsewhere is the same model; the weights
    fingerprint beside it tells checkpoints apart), anything else (hub id, named model) as is."""
    path = Path(name)
    if not path.exists():
        return name
    from ..models.registry import name_of_folder

    return name_of_folder(path) or path.resolve().name


def model_identity(lmm) -> dict:
    """``{"model", "weights"}`` of a loaded model, as every settings.json records it."""
    return {"model": model_label(str(lmm.name)), "weights": lmm.weights_fingerprint()}


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def differences(stored: dict, settings: dict) -> list[str]:
    """``key: old -> new`` for every key whose value differs (nested dicts compared by key)."""
    out = []
    for key in sorted(set(stored) | set(settings)):
        old, new = stored.get(key), settings.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out += [f"{key}.{d}" for d in differences(old, new)]
        elif old != new:
            out.append(f"{key}: {_short(old)} -> {_short(new)}")
    return out


def check_settings(folder: str | Path, settings: dict, what: str, part: bool = False) -> bool:
    """Record ``settings`` in ``folder``, or check them against the ones recorded there.

    Returns True when the folder already held these settings (a resume). Raises
    :class:`SettingsMismatchError` when it holds others. ``part``: ``settings`` are some of
    the keys only (what is known before the model loads): check those, record nothing."""
    folder = Path(folder)
    path = folder / SETTINGS_NAME
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as they will be read back
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise StvError(f"{path} is not valid JSON (line {err.lineno}); pass --out NEW or --recompute") from None
        diff = differences({k: stored.get(k) for k in settings} if part else stored, settings)
        if diff:
            shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
            raise SettingsMismatchError(
                f"{folder} holds {what} computed under other settings ({shown}); "
                "pass --out NEW for a new folder, or --recompute to replace them"
            )
        return True
    if not part:
        atomic_write_json(path, settings)
        note_written(folder, SETTINGS_NAME)
    return False


MANIFEST_NAME = ".stv-written.json"  # the names stv wrote into a folder: all that --recompute may remove


def note_written(folder: str | Path, *names: str) -> None:
    """Add ``names`` (entries of ``folder``) to the folder's manifest of what stv wrote."""
    path = Path(folder) / MANIFEST_NAME
    listed = written_by_stv(folder) or set()
    if not set(names) <= listed:
        atomic_write_json(path, sorted(listed | set(names)))


def written_by_stv(folder: str | Path) -> set[str] | None:
    """The names stv wrote into ``folder`` (None: the folder has no manifest)."""
    path = Path(folder) / MANIFEST_NAME
    try:
        listed = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return {str(n) for n in listed} if isinstance(listed, list) else None


def clear(folder: str | Path, names: Iterable[str]) -> None:
    """Remove what a run wrote into ``folder`` (its settings first, so a kill in between
    leaves nothing that a later run trusts): entries matching ``names`` that the folder's
    manifest lists. A folder written before manifests existed: matches of ``names`` when its
    settings are stv's. A file stv did not write is never removed or overwritten."""
    folder = Path(folder)
    listed = written_by_stv(folder)
    settings = folder / SETTINGS_NAME
    if listed is None:
        if not settings.is_file():
            return  # nothing stv wrote here
        if not _is_stv_settings(settings):
            raise StvError(f"{settings} was not written by stv, so --recompute will not replace it; pass another --out")
        listed = {p.name for name in names for p in folder.glob(name)} | {SETTINGS_NAME}
    if settings.is_file() and SETTINGS_NAME in listed:
        settings.unlink()
    for name in names:
        for path in folder.glob(name):
            if path.name in listed:
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def _is_stv_settings(path: Path) -> bool:
    """Whether ``path`` is a settings file stv wrote (a JSON object with its kind and version)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "kind" in data and "stv_version" in data


def prepare_folder(out: str | Path, settings: dict, recompute: bool, what: str, outputs: Sequence[str]) -> None:
    """Record ``settings`` in ``out`` (``outputs`` cleared first with ``recompute``), or refuse
    other ones. Settings without a "model" key are what is known before the model loads:
    checked only, so a mismatch fails before minutes of loading."""
    if "model" not in settings:
        if not recompute and Path(out).is_dir():
            check_settings(out, settings, what, part=True)
        return
    if recompute:
        clear(out, outputs)
    Path(out).mkdir(parents=True, exist_ok=True)
    check_settings(out, settings, what)
    note_written(out, *(name for name in outputs if "*" not in name and not (Path(out) / name).exists()))


def unit_path(out: str | Path, task: str, seed: int) -> Path:
    """Where a resumable run keeps the results of one (task, seed)."""
    return Path(out) / "units" / f"{task}.seed{seed}.json"


def stored_unit(out: str | Path, task: str, seed: int, data: dict) -> dict | None:
    """What an earlier run kept for (task, seed), or None; refused if its data differ."""
    path = unit_path(out, task, seed)
    if not path.is_file():
        return None
    try:
        unit = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise StvError(f"{path} is not valid JSON (line {err.lineno}); delete it or pass --recompute") from None
    if unit.get("data") != data:
        raise SettingsMismatchError(
            f"{path} was computed on other {task} data ({unit.get('data')} now {data}); "
            "pass --out NEW for a new folder, or --recompute to replace it"
        )
    return unit
