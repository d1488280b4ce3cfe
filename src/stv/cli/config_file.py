"""``--config FILE``: a JSON file of flags, expanded into the command line before parsing,
each key checked against the sub-command's flags and types."""

from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path

from ..errors import StvError
from .parser import StvParser


def expand_config(argv: list[str], parser: StvParser) -> list[str]:
    """``--config FILE.json`` -> its keys as flags, placed before the user's own flags (which win).

    Going through the flags (rather than ``set_defaults``) keeps each value's type conversion,
    choices and required-argument checks exactly as on the command line.

    Keys the sub-command does not take are skipped, so one file serves `stv fit` and `stv eval`.
    """
    argv = [part for arg in argv for part in (arg.split("=", 1) if arg.startswith("--config=") else [arg])]
    if "--config" not in argv:
        return argv
    i = argv.index("--config")
    if i + 1 >= len(argv):
        raise StvError("--config needs a JSON file")
    path = Path(argv[i + 1])
    if not path.is_file():
        raise StvError(f"--config {path}: no such file")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f"line {err.lineno}: {err.msg}" if isinstance(err, json.JSONDecodeError) else "not UTF-8 text"
        raise StvError(f"--config {path} is not valid JSON ({where})") from None
    if not isinstance(config, dict):
        raise StvError(
            f'--config {path} holds a JSON {type(config).__name__}; it must be an object of flag names, e.g. {{"steps": 80}}'
        )
    if config.get("trust_remote_code") and "--trust-remote-code" not in argv:
        raise StvError(
            f"--config {path} sets trust_remote_code, which runs the checkpoint's own code; "
            "pass --trust-remote-code on the command line as well to allow it"
        )
    command = parser.commands.get(argv[0]) if argv else None
    accepted = command.flags if command is not None else set()
    flags: list[str] = []
    sections = {"fit", "eval", "scan", "demo", "compare"}  # {"fit": {...}}: keys for one sub-command only
    own = config.get(argv[0], {}) if argv and isinstance(config.get(argv[0]), dict) else {}
    config = {**{k: v for k, v in config.items() if k not in sections}, **own}
    every = {action.dest: action for p in parser.commands.values() for action in p.options}
    known = {flag for p in parser.commands.values() for flag in p.flags}
    for key, value in config.items():
        flag = "--" + key.replace("_", "-")
        if key.startswith("_"):
            continue  # comments
        if flag not in known and key not in every:
            names = sorted({f[2:].replace("-", "_") for f in known if not f.startswith("--no-")})
            near = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise StvError(f'--config {path}: unknown key {key!r}{hint} (keys are flag names, e.g. "steps")')
        if flag not in accepted:
            continue  # a key for another sub-command
        action = next(a for a in command.options if flag in a.option_strings)  # type: ignore[union-attr]
        _check_type(path, key, value, action)
        if value is True:
            flags.append(flag)
        elif value is False:
            if "--no-" + flag[2:] in accepted:  # a preset's default turned off by the file
                flags.append("--no-" + flag[2:])
        elif value is not None:
            flags += [flag, str(value)]
    rest = argv[:i] + argv[i + 2 :]
    return rest[:1] + flags + rest[1:]


def _check_type(path: Path, key: str, value, action: argparse.Action) -> None:
    """A ``--config`` value the flag can take, or an error naming the file and the key."""
    if value is None:
        return
    switch = action.nargs == 0  # a flag without a value (--normalize, --keep-arm / --no-keep-arm)
    if switch or isinstance(value, bool):
        if not (switch and isinstance(value, bool)):
            wanted = "true or false" if switch else "a value"
            raise StvError(f"--config {path}: key {key!r} takes {wanted}, got {json.dumps(value)}")
        return
    if isinstance(value, (dict, list)):
        raise StvError(f"--config {path}: key {key!r} takes one value, got {json.dumps(value)[:60]}")
    kind = action.type if callable(action.type) else str
    try:
        converted = kind(str(value))
    except (TypeError, ValueError):
        name = getattr(kind, "__name__", "value")
        raise StvError(
            f"--config {path}: key {key!r} takes a{'n' if name[0] in 'aeiou' else ''} {name}, got {json.dumps(value)}"
        ) from None
    if action.choices is not None and converted not in action.choices:
        raise StvError(
            f"--config {path}: key {key!r} takes one of {', '.join(map(str, action.choices))}, got {json.dumps(value)}"
        )
