"""Where downloaded data and models live, and how they get there (once, atomically)."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from trainables.io import atomic_dir, atomic_path

__all__ = ["cache_dir", "data_dir", "download", "fetch_once"]


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


def fetch_once(target: Path, fill: Callable[[Path], None], marker: str = "config.json",
               timeout: float = 1800.0) -> Path:
    """The cache folder ``target``, filled by ``fill(folder)`` the first time, once across processes.

    Why a lock: on a fresh machine several processes (test workers, Ray trials, two studies) ask for the
    same model at once; without it each fetches, and the last to finish replaces the folder while the others
    read it. The second process waits here and then finds ``target/marker`` there.
    """
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock", timeout=timeout):
        if not (target / marker).is_file():
            with atomic_dir(target) as out:
                fill(out)
    return target
