"""The CPU variant of the property paper set changes only what a CPU cannot afford, and one trial per row."""

from __future__ import annotations

import argparse
import importlib.util

import pytest
import yaml

from studies.compare import load_papers
from studies.spec import parse_study
from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("paper_property_cpu", ROOT / "benchmarks" / "paper_property_cpu.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
ARGS = argparse.Namespace(epochs=3, limit=1500, lr=5e-5)


@pytest.mark.parametrize("paper", bench.PAPERS)
def test_cpu_variant_runs_each_published_row_once_on_the_papers_split(paper: str) -> None:
    original = yaml.safe_load((ROOT / "studies" / "papers" / f"property_{paper}.yaml").read_text())
    spec = parse_study(bench.cpu_variant(paper, ARGS))
    table = load_papers()[f"property_{paper}"]
    if spec.sampler == "grid":
        assert spec.grid == {table["key"]: [row["key"] for row in table["rows"]]}
    else:  # peft: the enqueued rows, one per method of the table
        assert sorted(p[table["key"]] for p in spec.enqueue) == sorted(row["key"] for row in table["rows"])
    assert spec.num_trials == len(table["rows"])
    assert spec.model.name == "rxnfp-bert" and spec.max_epochs == 3 and spec.dataset.limit == 1500
    assert spec.dataset.split == original["dataset"]["split"] and spec.dataset.seed == original["dataset"]["seed"]
    for knob in ("top_k", "curriculum_bins", "curriculum_pacing", "influence_curvature", "rounds"):
        if knob in original.get("fixed", {}):
            assert spec.fixed[knob] == original["fixed"][knob]  # the paper's selection settings are kept
