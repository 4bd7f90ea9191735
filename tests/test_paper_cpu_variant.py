"""benchmarks/paper_property_cpu.py: the CPU runs of the property paper tables change only what a CPU cannot
afford (the model, the resources), keep every as-published setting, and the table's as-published column is
the mean ± std over the seeds, beside the published figure."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest
import yaml

from studies.compare import compare_table, load_papers
from studies.spec import parse_study
from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("paper_property_cpu", ROOT / "benchmarks" / "paper_property_cpu.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
PAPERS = ROOT / "studies" / "papers"


@pytest.mark.parametrize("paper", bench.PAPERS)
def test_the_cpu_study_is_the_as_published_one_but_for_model_seed_and_resources(paper: str) -> None:
    file = PAPERS / f"property_{paper}_as_published.yaml"
    original = yaml.safe_load(file.read_text())
    raw = bench.cpu_study(file, "x", 2, 2)
    changed = {k for k in set(original) | set(raw) if original.get(k) != raw.get(k)}
    assert changed == {"name", "model", "seed", "resources", "baselines"}
    spec = parse_study(raw)
    table = load_papers()[f"property_{paper}"]
    assert spec.grid == {table["key"]: [row["key"] for row in table["rows"]]}  # each published row once
    assert spec.model.name == "rxnfp-bert" and spec.seed == 2 and spec.resources.gpus_per_trial == 0
    assert spec.resources.precision == "bf16"
    assert spec.max_epochs == 5 and spec.fixed["lr"] == 1e-4 and spec.fixed["optimizer"] == "adam"


def test_the_as_published_column_is_the_mean_and_std_over_seeds_and_diff_is_from_the_mean() -> None:
    paper = load_papers()["property_curriculum"]

    def seed(none_r2: float, cur_r2: float) -> pd.DataFrame:
        trials = pd.DataFrame([{"selection": "none", "valid_rmse": 0.7, "test_r2": none_r2, "test_mse": 0.5},
                               {"selection": "curriculum", "valid_rmse": 0.7, "test_r2": cur_r2, "test_mse": 0.4}])
        return compare_table(trials, paper, "min")

    text = bench.table("property_curriculum", [seed(0.60, 0.70), seed(0.64, 0.74)], seed(0.5, 0.8), paper)
    curriculum = next(line for line in text.splitlines() if line.startswith("| Curriculum"))
    cells = [c.strip() for c in curriculum.strip("|").split("|")]
    # row | r2 paper | as published | tuned | diff | mse paper | as published | tuned | diff
    assert cells[1] == "0.746" and cells[2] == "0.720 ± 0.028" and cells[3] == "0.800" and cells[4] == "-0.026"
    assert cells[5] == "0.375" and cells[6] == "0.400 ± 0.000"
