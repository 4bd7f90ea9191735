"""Errors that reach the user: each says where the problem is and what it is."""

from __future__ import annotations

__all__ = ["ChemtuneError", "DataError", "StudyError", "UnknownNameError"]


class ChemtuneError(ValueError):
    """Base class of every error chemtune raises for bad input."""


class DataError(ChemtuneError):
    """A data file is missing, malformed, or has too many bad rows."""


class StudyError(ChemtuneError):
    """A study file or a search-space setting is invalid."""


class UnknownNameError(ChemtuneError, KeyError):
    """A registry lookup with a name that is not registered."""

    def __init__(self, kind: str, name: str, choices: list[str]) -> None:
        self.kind, self.name, self.choices = kind, name, choices
        super().__init__(f"unknown {kind} {name!r}; choose one of: {', '.join(choices) or '(none)'}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]
