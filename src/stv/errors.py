"""One base class for every error a user can cause, so the CLI can catch exactly those.

``StvError`` subclasses ``ValueError`` so code that caught ``ValueError`` before keeps working.
The CLI prints ``error: <message>`` and exits 2 for these; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class StvError(ValueError):
    """A bad input, setting, file or artifact: the message names it and the fix."""


class SettingsMismatchError(StvError):
    """A resumable output folder holds results computed under other settings."""
