"""Labelled molecule tables read from CSV files, validated row by row."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trainables.data.chem import canonicalize
from trainables.data.report import DataReport
from trainables.errors import DataError
from trainables.inputs import check_file, excerpt, long_reason, read_lines, too_long

__all__ = ["MoleculeTable", "read_csv_columns", "read_property_csv", "report_long_lines",
           "table_from_records"]


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
        if too_long(str(raw)):  # RDKit never sees it (a 10 MB SMILES took 8 GB)
            report.add(long_reason(), row, raw)
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


def read_csv_columns(path: str | Path, columns: list[str | None], what: str = "column(s)",
                     keep_blank: bool = False, file_kind: str = "CSV file") -> pd.DataFrame:
    """Read a CSV as strings; a missing or unreadable file, a parse error or a missing column names the file.

    The file is checked and read line by line first (:mod:`trainables.inputs`): a line too long to hold a
    SMILES under the limit is not parsed but listed in ``frame.attrs["long_lines"]`` as ``(line, bytes)``, so
    the caller reports it as a bad row; ``frame.attrs["lines"]`` holds each row's line number in the file.

    Args:
        path: The CSV file.
        columns: Columns that must be present (``None`` entries are skipped).
        what: How the error names the missing columns (e.g. "reaction column").
        keep_blank: Blank lines are rows (``predict`` reports them), not skipped.
        file_kind: What the file is, for messages ("teacher CSV").
    """
    path = check_file(path, file_kind)
    header, body, numbers, long_lines = None, [], [], []
    for number, text, size in read_lines(path):
        if text is None:
            if header is None:
                raise DataError(f"{path}: the header (line {number}) is {size:,} bytes long: not a {file_kind}")
            long_lines.append((number, size))
        elif header is None:
            if text.strip():
                header = text
        elif text.strip() or keep_blank:
            body.append(text)
            numbers.append(number)
    if header is None:
        raise DataError(f"{path}: no header line (the {file_kind} is blank)")
    try:
        frame = pd.read_csv(io.StringIO("\n".join([header, *body]) + "\n"), dtype=str, keep_default_na=False,
                            skip_blank_lines=not keep_blank)
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: not a readable {file_kind} ({excerpt(str(err).strip(), 200)})") from None
    missing = [c for c in columns if c and c not in frame.columns]
    if missing:
        shown = ", ".join(excerpt(c, 40) for c in list(frame.columns)[:20])
        more = f" and {len(frame.columns) - 20} more" if len(frame.columns) > 20 else ""
        raise DataError(f"{path}: missing {what} {', '.join(map(repr, missing))}; the file has {shown}{more}")
    # a quoted field spanning lines breaks the one-row-per-line match: number rows from the header then
    frame.attrs["lines"] = numbers if len(numbers) == len(frame) else list(range(2, len(frame) + 2))
    frame.attrs["long_lines"] = long_lines
    return frame


def report_long_lines(report: DataReport, frame: pd.DataFrame) -> None:
    """Count the lines :func:`read_csv_columns` skipped as too long as bad rows, with their line numbers."""
    for number, size in frame.attrs.get("long_lines", []):
        report.n_rows += 1
        report.add(long_reason(), number, f"a {size:,}-byte line")


def read_property_csv(
    path: str | Path, smiles_column: str, target_column: str, id_column: str | None = None
) -> tuple[MoleculeTable, DataReport]:
    """Read a CSV of molecules and labels; row numbers in the report are file line numbers."""
    frame = read_csv_columns(path, [smiles_column, target_column, id_column])
    idents = frame[id_column] if id_column else pd.Series(range(len(frame))).astype(str)
    records = list(zip(frame.attrs["lines"], frame[smiles_column], frame[target_column], idents))
    table, report = table_from_records(records, source=str(Path(path)))
    report_long_lines(report, frame)
    return table, report
