"""The installed stv's version, read from its metadata (imports nothing heavy)."""

from __future__ import annotations

from importlib import metadata


def stv_version() -> str:
    """This package's version from its installed metadata."""
    try:
        return metadata.version("stv")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"
