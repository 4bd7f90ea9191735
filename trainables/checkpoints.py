"""Checkpoint integrity: a checkpoint is sealed last, checked on load, and a broken one is skipped.

A trial killed while it writes a checkpoint, a node lost while Tune copies it to storage, or a
checkpoint folder deleted by hand must not stop the trial from resuming: it resumes from the newest
checkpoint whose ``checkpoint.json`` (written last, atomically) lists files that are all present with
their recorded size and SHA-256.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

from trainables.io import atomic_write_json

__all__ = ["MANIFEST", "seal_checkpoint", "checkpoint_problem", "newest_valid"]

MANIFEST = "checkpoint.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seal_checkpoint(folder: Path) -> None:
    """Record every file of ``folder`` (size, SHA-256) in its manifest; call once everything is written."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    atomic_write_json(folder / MANIFEST, {
        "files": {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    })


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from (missing, unsealed, a file missing or changed); ``None`` if it can."""
    import json

    if not folder.is_dir():
        return f"{folder}: no such checkpoint folder"
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return f"{folder}: no {MANIFEST} (the checkpoint was not completely written)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as err:
        return f"{manifest}: unreadable manifest ({err})"
    if "state.pt" not in files:
        return f"{folder}: the manifest lists no state.pt"
    for name, meta in files.items():
        path = folder / name
        if not path.is_file():
            return f"{folder}: {name} is missing"
        if path.stat().st_size != meta["size"] or _sha256(path) != meta["sha256"]:
            return f"{folder}: {name} does not match its recorded size/SHA-256 (truncated or changed)"
    return None


def _index(path: Path) -> int:
    match = re.search(r"(\d+)$", path.name)
    return int(match.group(1)) if match else -1


def newest_valid(preferred: Path, siblings: Iterable[Path] = ()) -> tuple[Path | None, list[str]]:
    """The newest valid checkpoint among ``preferred`` and older ``siblings`` (Tune's ``checkpoint_NNNNNN``).

    Returns:
        The folder to resume from (``None``: none is valid, the trial starts over) and why each newer
        one was skipped.
    """
    skipped: list[str] = []
    limit = _index(preferred)
    older = sorted((p for p in siblings if p != preferred and (limit < 0 or _index(p) < limit)), key=_index, reverse=True)
    for folder in [preferred, *older]:
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder, skipped
        skipped.append(problem)
    return None, skipped
