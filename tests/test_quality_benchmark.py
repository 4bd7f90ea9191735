"""benchmarks/lipo_quality_cpu.py: issue 22's quality runs search nothing and prune nothing (every knob of each
trial is given, grace period = max_epochs), the two language-model rows differ only in the hybrid head, and the
table is the mean ± std over seeds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from search_spaces.dmpnn import PROPERTY_MIX
from studies.spec import load_study, parse_study
from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("lipo_quality_cpu", ROOT / "benchmarks" / "lipo_quality_cpu.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.parametrize("split", ["random", "scaffold"])
def test_each_trial_is_given_whole_and_runs_to_its_end(split: str) -> None:
    raw = bench.quality_study(split, 2, 7, 3e-4, 1)
    spec = parse_study(raw)
    assert spec.num_trials == len(spec.enqueue) == 3 and spec.seed == 2 and spec.max_epochs == 7
    assert spec.scheduler.grace_period == spec.max_epochs  # ASHA never stops a trial early
    assert spec.dataset.split == split and spec.dataset.seed == 0  # the seed moves the trials, never the split
    for config in spec.enqueue:  # nothing is left for Optuna to sample
        active = {p.name for p in PROPERTY_MIX.declared if p.searchable
                  if all(config.get(k) in v for k, v in p.when.items())}
        assert active <= set(config), f"sampled, not given: {sorted(active - set(config))}"
    lm, hybrid, dmpnn = spec.enqueue
    assert {k for k in lm if lm[k] != hybrid.get(k)} == {"head_features"} and hybrid["head_features"] == "both"
    assert lm["lr"] == 3e-4 and dmpnn["arch"] == "dmpnn" and spec.resources.precision == "bf16"


def test_the_table_is_mean_and_std_over_seeds_with_the_targets() -> None:
    seed = {"lm": {"r2": 0.6, "rmse": 0.7, "valid_r2": 0.7}, "ensemble": {"r2": 0.8, "rmse": 0.5}}
    text = bench.table("random", [seed, {**seed, "lm": {"r2": 0.7, "rmse": 0.6, "valid_r2": 0.7}}])
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()[2:]}
    assert rows["lm"] == ["lm", "2", "0.700 ± 0.000", "0.650 ± 0.071", "0.650 ± 0.071", "test R2 >= 0.70"]
    assert rows["ensemble"][1:5] == ["2", "", "0.800 ± 0.000", "0.500 ± 0.000"]
    assert rows["dmpnn"][1:4] == ["0", "", ""]


def test_the_domain_adapted_rows_name_the_molecule_pretraining_stage_and_differ_only_in_the_encoder() -> None:
    plain, dapt = bench.quality_study("random", 1, 12, 1e-4, 1), bench.quality_study("random", 1, 12, 1e-4, 1,
                                                                                      encoder="rxnfp-bert-dapt")
    spec = parse_study(dapt)
    assert spec.name == "lipo-quality-dapt-random-s1" and spec.num_trials == 2
    assert dapt["enqueue"] == plain["enqueue"][:2]  # the two language-model rows, the same knobs
    stage = load_study(ROOT / "studies" / "pretrain_rxnfp_bert_molecules.yaml")
    assert Path(dapt["model"]["pretrain"]) == ROOT / "studies" / "pretrain_rxnfp_bert_molecules.yaml"
    assert stage.task == "pretrain" and stage.model.name == spec.model.name == "rxnfp-bert"
    # the leakage guard removes the held-out molecules of both splits the benchmark fine-tunes on
    guarded = {(e["name"], e.get("split")) for e in stage.options["exclude"]}
    assert {("lipophilicity", "random"), ("lipophilicity", "scaffold")} <= guarded


def test_the_dmpnn_budget_reaches_the_trial_and_a_non_default_one_names_the_study() -> None:
    """4 passes per epoch by default (chemprop's ~50 in 12 epochs), fixed for the study: an enqueued value for a
    fixed-only knob would be refused (the sampler never draws it)."""
    default, starved = (parse_study(bench.quality_study("random", 0, 12, 1e-4, 1, dmpnn_passes=n)) for n in (4, 1))
    assert default.fixed == {"dmpnn_passes_per_epoch": 4} and default.name == "lipo-quality-random-s0"
    assert starved.fixed == {"dmpnn_passes_per_epoch": 1} and starved.name == "lipo-quality-random-p1-s0"
    from search_spaces import SPACES

    config = SPACES.get("property_mix").sample(fixed={**default.fixed, "arch": "dmpnn"})
    assert config["dmpnn_passes_per_epoch"] == 4
