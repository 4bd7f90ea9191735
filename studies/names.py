"""Names that become file names, MLflow experiments, Optuna studies and registered models.

A study name is also a path component (``studies/NAME.yaml``, Ray Tune's experiment folder), so a
name that could climb out of its folder (``../``, an absolute path, a NUL byte) or exceed a file
name's length is refused before anything is written.
"""

from __future__ import annotations

import re

from trainables.errors import StudyError

__all__ = ["NAME_PATTERN", "MAX_NAME_LENGTH", "check_name"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MAX_NAME_LENGTH = 128  # well under the 255-byte file-name limit, with room for suffixes


def check_name(kind: str, value: object) -> str:
    """Return ``value`` if it is a safe ``kind`` name (letters, digits, ``_ . -``, no ``..``), else raise."""
    if not isinstance(value, str) or not value:
        raise StudyError(f"{kind} name must be a non-empty string, got {value!r}")
    shown = value if len(value) <= 60 else value[:60] + "..."
    if len(value) > MAX_NAME_LENGTH:
        raise StudyError(f"{kind} name {shown!r} is {len(value)} characters long; at most {MAX_NAME_LENGTH}")
    if not re.fullmatch(NAME_PATTERN, value) or ".." in value:
        raise StudyError(f"{kind} name {shown!r} may hold only letters, digits, '_', '.', '-' (no '..', '/', "
                         "NUL or leading '.'), as it names files and folders")
    return value
