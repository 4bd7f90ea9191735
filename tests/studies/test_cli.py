from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from studies.cli import build_parser, main
from tests.conftest import tiny_study
from trainables.methods import METHODS


def _write(tmp_path: Path, study: dict) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return str(path)


def test_validate_prints_the_data_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", _write(tmp_path, tiny_study())]) == 0
    out = capsys.readouterr().out
    assert "4999 rows, 4892 kept, 107 excluded" in out and "invalid SMILES: 8" in out
    assert "valid" in out and "n_train=240" in out


@pytest.mark.parametrize(
    ("study", "message"),
    [
        (tiny_study(fixed={"method": "adapter"}), "fixed.method: 'adapter' is not one of"),
        (tiny_study(fixed={"rank": 4}), "unknown parameter(s) ['rank']"),
        (tiny_study(dataset={"name": "csv", "path": "/nonexistent/x.csv", "limit": None}), "x.csv: file not found"),
    ],
)
def test_validate_rejects_bad_studies(tmp_path: Path, capsys: pytest.CaptureFixture, study: dict, message: str) -> None:
    assert main(["validate", _write(tmp_path, study)]) == 2
    assert message in capsys.readouterr().out.replace("\n", " ")


def test_launch_of_a_broken_study_starts_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\ntask: property\n  dataset: {name: nci-logp\n")
    assert main(["launch", str(path), "--root", str(tmp_path / "store")]) == 2
    assert "malformed YAML" in capsys.readouterr().out
    assert not (tmp_path / "store").exists()


def test_list_choices_come_from_the_registries(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in METHODS.names())
    with pytest.raises(SystemExit):
        build_parser().parse_args(["list", "widgets"])


def test_list_spaces_prints_ranges_and_the_fixable_knobs(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "spaces"]) == 0
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())  # the table wraps long lines
    assert "lr: float [1e-05, 0.003] log" in out
    assert "grad_accum: int = 1 (fixed only)" in out and "lissa_batch: int = 64 (fixed only)" in out
