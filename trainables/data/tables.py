"""Labelled molecule tables read from CSV files, validated row by row."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trainables.data.chem import canonicalize
from trainables.data.report import DataReport
from trainables.errors import DataError

__all__ = ["MoleculeTable", "read_csv_columns", "read_property_csv", "table_from_records"]


@dataclass
class MoleculeTable:
    """Canonical SMILES with float labels; ``rows`` are the source line numbers."""

    smiles: list[str]
    targets: np.ndarray
    ids: list[str]
    rows: list[int]

    def __len__(self) -> int:
        return len(self.smiles)

    def subset(self, index: np.ndarray | list[int]) -> "MoleculeTable":
        index = list(index)
        return MoleculeTable(
            smiles=[self.smiles[i] for i in index],
            targets=self.targets[index],
            ids=[self.ids[i] for i in index],
            rows=[self.rows[i] for i in index],
        )


def table_from_records(
    records: list[tuple[int, str, object, str]], source: str
) -> tuple[MoleculeTable, DataReport]:
    """Validate ``(row, smiles, label, id)`` records into a table and its report.

    A row is excluded (and reported) when its SMILES is empty or invalid, its label is
    missing or not a finite number, or its canonical SMILES repeats an earlier row.
    """
    report = DataReport(source=source, n_rows=len(records))
    seen: dict[str, int] = {}
    smiles, targets, ids, rows = [], [], [], []
    for row, raw, label, ident in records:
        if raw is None or (isinstance(raw, float) and math.isnan(raw)) or not str(raw).strip():
            report.add("empty SMILES", row)
            continue
        can = canonicalize(str(raw))
        if can is None:
            report.add("invalid SMILES", row, raw)
            continue
        if label is None or (isinstance(label, str) and not label.strip()):
            report.add("missing label", row)
            continue
        try:
            y = float(label)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            report.add("non-numeric label", row, label)
            continue
        if math.isnan(y):
            report.add("missing label", row)
            continue
        if math.isinf(y):
            report.add("non-numeric label", row, label)
            continue
        if can in seen:
            report.add("duplicate SMILES", row, f"{raw} (same molecule as row {seen[can]})")
            continue
        seen[can] = row
        smiles.append(can)
        targets.append(y)
        ids.append(str(ident))
        rows.append(row)
    table = MoleculeTable(smiles, np.asarray(targets, dtype=np.float64), ids, rows)
    return table, report


def read_csv_columns(path: str | Path, columns: list[str | None], what: str = "column(s)") -> pd.DataFrame:
    """Read a CSV as strings; a missing file, a parse error or a missing column names the file.

    Args:
        path: The CSV file.
        columns: Columns that must be present (``None`` entries are skipped).
        what: How the error names the missing columns (e.g. "reaction column").
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from err
    missing = [c for c in columns if c and c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing {what} {', '.join(map(repr, missing))}; "
            f"the file has {', '.join(map(repr, frame.columns))}"
        )
    return frame


def read_property_csv(
    path: str | Path, smiles_column: str, target_column: str, id_column: str | None = None
) -> tuple[MoleculeTable, DataReport]:
    """Read a CSV of molecules and labels; row numbers in the report are file line numbers."""
    frame = read_csv_columns(path, [smiles_column, target_column, id_column])
    idents = frame[id_column] if id_column else pd.Series(range(len(frame))).astype(str)
    records = [
        (i + 2, s, t, ident)  # +2: 1-based, after the header line
        for i, (s, t, ident) in enumerate(zip(frame[smiles_column], frame[target_column], idents))
    ]
    return table_from_records(records, source=str(Path(path)))
