"""Bad selection settings fail before any training, with messages that name the problem."""

from __future__ import annotations

import pandas as pd
import pytest

from studies.spec import parse_study
from trainables.errors import StudyError
from trainables.property.task import prepare_property

BASE = {
    "name": "checks", "task": "property",
    "dataset": {"name": "nci-logp", "limit": 200, "split": "random",
                "fractions": {"valid": 0.1, "test": 0.1, "pool": 0.2}},
    "model": {"name": "tiny-bert"}, "search_space": "selection", "max_epochs": 3,
    "scheduler": {"grace_period": 3},  # no early stopping (tests/studies/test_selection_rungs.py checks the rungs)
}


def study(**changes):
    return parse_study({**BASE, **changes})


def test_top_k_larger_than_the_pool_fails_at_prepare():
    spec = study(fixed={"selection": "influence", "top_k": 1000})
    with pytest.raises(StudyError, match=r"takes 1000 pool molecules .* the pool holds 40"):
        prepare_property(spec)


def test_the_high_end_of_a_top_k_range_is_checked():
    spec = study(fixed={"selection": "influence"}, ranges={"top_k": [16, 1024]})
    with pytest.raises(StudyError, match="top_k"):
        prepare_property(spec)


def test_active_budget_is_n_select_times_rounds():
    spec = study(fixed={"selection": "active", "n_select": 25, "rounds": 2})
    with pytest.raises(StudyError, match=r"takes 50 pool molecules \(n_select \* rounds"):
        prepare_property(spec)
    assert len(prepare_property(study(fixed={"selection": "active", "n_select": 20, "rounds": 2})).payload.pool) == 40


def test_zero_passes_fail_when_the_study_is_read():
    with pytest.raises(StudyError, match=r"mc_passes.*greater than or equal to 2"):
        study(fixed={"selection": "active", "mc_passes": 0})


def test_rounds_need_epochs_after_them():
    with pytest.raises(StudyError, match="rounds 3 must be below max_epochs 3"):
        study(fixed={"selection": "active", "rounds": 3})


def test_pool_methods_need_a_pool():
    no_pool = {**BASE["dataset"], "fractions": {"valid": 0.1, "test": 0.1}}
    with pytest.raises(StudyError, match="chooses from a pool, but the study has none"):
        study(dataset=no_pool, fixed={"selection": "influence"})
    study(dataset=no_pool, fixed={"selection": "curriculum"})  # curriculum orders the train split


def test_an_empty_pool_fails_at_prepare(tmp_path):
    # A pool CSV whose molecules are all in valid or test: every row excluded (and counted).
    base = study(dataset={**BASE["dataset"], "fractions": {"valid": 0.1, "test": 0.1}}, fixed={"selection": "none"})
    held = prepare_property(base).payload
    pool = pd.DataFrame({"smiles": held.valid.smiles[:5] + held.test.smiles[:5], "target": 1.0})
    pool.to_csv(tmp_path / "pool.csv", index=False)
    spec = study(dataset={**BASE["dataset"], "fractions": {"valid": 0.1, "test": 0.1}},
                 pool={"path": str(tmp_path / "pool.csv")}, fixed={"selection": "influence", "top_k": 5})
    with pytest.raises(StudyError, match="the pool is empty after excluding molecules in valid/test"):
        prepare_property(spec)


def test_pool_rows_in_valid_or_test_are_excluded_and_counted(tmp_path):
    base = study(dataset={**BASE["dataset"], "fractions": {"valid": 0.1, "test": 0.1}}, fixed={"selection": "none"})
    held = prepare_property(base).payload
    fresh = ["CCO", "CCCCO", "NCCc1ccccc1"]  # canonical, and not in the NCI subset
    pool = pd.DataFrame({"smiles": held.valid.smiles[:2] + held.test.smiles[:1] + fresh, "target": 0.5})
    pool.to_csv(tmp_path / "pool.csv", index=False)
    spec = study(dataset={**BASE["dataset"], "fractions": {"valid": 0.1, "test": 0.1}},
                 pool={"path": str(tmp_path / "pool.csv")}, fixed={"selection": "influence", "top_k": 3})
    prepared = prepare_property(spec)
    assert sorted(prepared.payload.pool.smiles) == sorted(fresh)
    assert prepared.reports[-1].issues["in valid or test"]["count"] == 3


def test_exact_solver_on_the_whole_head_fails_when_the_study_is_read():
    with pytest.raises(StudyError, match="use influence_params 'head_out'"):
        study(fixed={"selection": "influence", "top_k": 5, "influence_params": "head", "influence_solver": "exact"})
    study(fixed={"selection": "influence", "top_k": 5, "influence_params": "head_out", "influence_solver": "exact"})


def test_unknown_task_option_is_named():
    with pytest.raises(StudyError, match="unknown property task option"):
        study(options={"base_model": "x"})
    study(options={"base_model_uri": "models:/x/1"}, fixed={"selection": "influence", "top_k": 5})
