from __future__ import annotations

from pathlib import Path

import pytest

from trainables.data.tables import read_property_csv
from trainables.errors import DataError


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mols.csv"
    path.write_text(text)
    return path


def test_bad_rows_are_reported_with_line_numbers(tmp_path: Path) -> None:
    path = _csv(tmp_path, "smiles,y\nCCO,1.0\nC1CC,2.0\n,3.0\nOCC,4.0\nCCN,abc\nCCC,\nc1ccccc1,5\n")
    table, report = read_property_csv(path, "smiles", "y")
    assert table.smiles == ["CCO", "c1ccccc1"]
    assert table.rows == [2, 8]
    assert report.n_rows == 7 and report.n_kept == 2 and report.n_excluded == 5
    assert report.issues["invalid SMILES"]["rows"] == [3]
    assert report.issues["empty SMILES"]["rows"] == [4]
    assert report.issues["duplicate SMILES"]["rows"] == [5]  # OCC is CCO
    assert "row 2" in report.issues["duplicate SMILES"]["examples"][0]
    assert report.issues["non-numeric label"]["rows"] == [6]
    assert report.issues["missing label"]["rows"] == [7]


def test_threshold_of_bad_rows_stops_with_the_summary(tmp_path: Path) -> None:
    path = _csv(tmp_path, "smiles,y\nCCO,1\nxx,2\nyy,3\nCCN,4\n")
    _, report = read_property_csv(path, "smiles", "y")
    report.check(0.5)  # exactly half is tolerated
    with pytest.raises(DataError, match=r"(?s)mols.csv: 50.0% of the rows are bad.*invalid SMILES: 2 \(first rows 3, 4\)"):
        report.check(0.25)


def test_missing_column_names_file_and_columns(tmp_path: Path) -> None:
    path = _csv(tmp_path, "smi,y\nCCO,1\n")
    with pytest.raises(DataError, match=r"mols.csv: missing column\(s\) 'smiles'; the file has 'smi', 'y'"):
        read_property_csv(path, "smiles", "y")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_property_csv(tmp_path / "nope.csv", "smiles", "y")
