"""Data reports: every excluded row is counted with its reason and row number."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainables.errors import DataError

__all__ = ["DataReport"]

_FIRST_ROWS = 20  # how many row numbers to keep per reason


@dataclass
class DataReport:
    """What happened to the rows of one source.

    Attributes:
        source: The file (or dataset name) the rows came from.
        n_rows: Rows read.
        issues: reason -> {"count": int, "rows": [first row numbers], "examples": [values]}.
    """

    source: str
    n_rows: int = 0
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, reason: str, row: int, value: Any = None) -> None:
        """Record that ``row`` (1-based line number in the source) is excluded for ``reason``."""
        entry = self.issues.setdefault(reason, {"count": 0, "rows": [], "examples": []})
        entry["count"] += 1
        if len(entry["rows"]) < _FIRST_ROWS:
            entry["rows"].append(row)
            entry["examples"].append(None if value is None else str(value)[:200])

    @property
    def n_excluded(self) -> int:
        return sum(e["count"] for e in self.issues.values())

    @property
    def n_kept(self) -> int:
        return self.n_rows - self.n_excluded

    def summary(self) -> str:
        """One readable paragraph: counts per reason with the first row numbers."""
        head = f"{self.source}: {self.n_rows} rows, {self.n_kept} kept, {self.n_excluded} excluded"
        parts = [
            f"  {reason}: {e['count']} (first rows {', '.join(map(str, e['rows'][:5]))})"
            for reason, e in sorted(self.issues.items())
        ]
        return "\n".join([head, *parts])

    def check(self, max_bad_fraction: float) -> None:
        """Raise :class:`DataError` when the excluded share exceeds ``max_bad_fraction``."""
        if self.n_rows == 0:
            raise DataError(f"{self.source}: no data rows")
        share = self.n_excluded / self.n_rows
        if share > max_bad_fraction:
            raise DataError(
                f"{self.source}: {share:.1%} of the rows are bad, above the limit of {max_bad_fraction:.1%} "
                f"(dataset.max_bad_fraction)\n{self.summary()}"
            )
        if self.n_kept == 0:
            raise DataError(f"{self.source}: no usable rows\n{self.summary()}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "n_rows": self.n_rows,
            "n_kept": self.n_kept,
            "n_excluded": self.n_excluded,
            "issues": self.issues,
        }
