"""Where downloaded data and models live, and how they get there (once, atomically)."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from trainables.io import atomic_path

__all__ = ["cache_dir", "data_dir", "download"]


def cache_dir() -> Path:
    """``$CHEMTUNE_CACHE`` or ``~/.cache/chemtune``."""
    return Path(os.environ.get("CHEMTUNE_CACHE", Path.home() / ".cache" / "chemtune")).expanduser()


def data_dir() -> Path | None:
    """``$CHEMTUNE_DATA_DIR`` when set: a folder holding ``lipophilicity/``, ``uspto50k/``..."""
    value = os.environ.get("CHEMTUNE_DATA_DIR")
    return Path(value).expanduser() if value else None


def download(url: str, dest: Path, timeout: float = 60.0) -> Path:
    """Fetch ``url`` into ``dest`` unless it is there already; never leaves a partial file."""
    if dest.is_file():
        return dest
    with atomic_path(dest) as tmp, urllib.request.urlopen(url, timeout=timeout) as response:
        tmp.write_bytes(response.read())
    return dest
