"""Unit level: the objectives schema, the Pareto front, the choosing rules, the refit's data and config."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest

from studies.choose import Rule, choose, parse_rule
from studies.results import pareto_mask
from studies.spec import parse_study
from tests.conftest import tiny_study
from trainables.errors import StudyError


def _without_metric(**overrides: object) -> dict:
    return {k: v for k, v in tiny_study(**overrides).items() if k != "metric"}


def test_the_first_objective_is_the_metric_and_costs_are_minimised() -> None:
    spec = parse_study(_without_metric(objectives=["valid_r2", "trainable_params", "device_seconds"]))
    assert spec.metric == "valid_r2" and spec.direction == "max"
    assert spec.directions == ["max", "min", "min"]
    assert parse_study(tiny_study()).directions == []  # a one-metric study


@pytest.mark.parametrize("objectives, message", [
    (["valid_rmse"], "objectives: give the metric and at least one cost"),
    (["trainable_params", "valid_rmse"], "objectives[0]: 'trainable_params' must be the study's metric"),
    (["valid_rmse", "gpu_hours"], "objectives[1]: objective 'gpu_hours' is neither"),
    (["valid_rmse", "trainable_params", "trainable_params"], "objectives[2]: 'trainable_params' is listed twice"),
    (["valid_mae", "trainable_params"], "objectives[0]: 'valid_mae' differs from metric 'valid_rmse'"),
])
def test_bad_objectives_are_named(objectives: list[str], message: str) -> None:
    with pytest.raises(StudyError) as err:
        parse_study(tiny_study(objectives=objectives))  # tiny_study sets metric: valid_rmse
    assert message in str(err.value)


def test_the_spec_survives_its_own_dump() -> None:
    """resume re-reads the dumped study: metric and objectives[0] are then both given, and equal."""
    spec = parse_study(_without_metric(objectives=["valid_mae", "trainable_params"]))
    again = parse_study(spec.model_dump(mode="json"))
    assert again.metric == "valid_mae" and again.objectives == ["valid_mae", "trainable_params"]


def test_pareto_mask_by_hand() -> None:
    frame = pd.DataFrame({"rmse": [1.0, 1.1, 0.9, 1.2, 1.0, np.nan], "params": [10, 5, 20, 6, 10, 1]})
    # (1.0, 10) and its duplicate are both on the front; (1.2, 6) is beaten by (1.1, 5); NaN never counts
    assert pareto_mask(frame, ["rmse", "params"], ["min", "min"]).tolist() == [True, True, True, False, True, False]
    # maximising r2 flips the first axis
    r2 = frame.assign(rmse=-frame["rmse"])
    assert pareto_mask(r2, ["rmse", "params"], ["max", "min"]).tolist() == [True, True, True, False, True, False]


def _board() -> pd.DataFrame:
    board = pd.DataFrame({
        "trial": ["a", "b", "c", "d", "e"], "role": "trial", "state": ["complete"] * 4 + ["pruned"],
        "valid_rmse": [1.00, 1.01, 1.015, 1.20, 0.50], "trainable_params": [1000, 300, 200, 10, 1],
        "model_uri": ["m"] * 5, "run_id": list("abcde"),
    })
    board.attrs.update(metric="valid_rmse", mode="min", objectives=["valid_rmse", "trainable_params"])
    return board


def test_rules_choose_by_hand() -> None:
    board = _board()
    assert choose(board, parse_rule("best"), {})[0]["trial"] == "a"
    pick, reason = choose(board, parse_rule("cheapest-within:0.02"), {})
    assert pick["trial"] == "c" and "3 trial(s) within 0.02" in reason  # the pruned e never competes
    assert choose(board, parse_rule("cheapest-within:0.005"), {})[0]["trial"] == "a"
    # knee of (1.00, 1000) (1.01, 300) (1.015, 200) (1.20, 10), scaled: c at (0.075, 0.19) is nearest (0, 0)
    assert choose(board, parse_rule("knee"), {})[0]["trial"] == "c"


@pytest.mark.parametrize("text", ["cheapest", "cheapest-within:", "cheapest-within:-1", "best-of:3", "knee:2"])
def test_bad_rules_are_refused(text: str) -> None:
    with pytest.raises(StudyError, match="use best, knee or cheapest-within:DELTA"):
        parse_rule(text)


def test_rule_names_round_trip() -> None:
    assert str(parse_rule("cheapest-within:0.020")) == "cheapest-within:0.02" and str(Rule("knee")) == "knee"


def test_refit_data_appends_valid_to_train_and_leaves_test_alone() -> None:
    from dataclasses import dataclass

    from studies.promote import merge_train_valid, refit_seeds, trial_config
    from trainables.data.tables import MoleculeTable

    @dataclass
    class Payload:
        train: MoleculeTable
        valid: MoleculeTable
        test: MoleculeTable

    def table(smiles: list[str]) -> MoleculeTable:
        return MoleculeTable(smiles, np.arange(len(smiles), dtype=float), smiles, list(range(len(smiles))))

    merged = merge_train_valid(Payload(table(["C", "CC"]), table(["CCC"]), table(["CCCC"])))
    assert merged.train.smiles == ["C", "CC", "CCC"] and merged.train.targets.tolist() == [0.0, 1.0, 0.0]
    assert merged.test.smiles == ["CCCC"] and merged.valid.smiles == ["CCC"]
    with pytest.raises(StudyError, match="only property studies"):
        merge_train_valid(object())
    assert refit_seeds(7, 3) == [7, 8, 9]
    assert trial_config({"lr": str(1e-05), "r": "8.0", "inf": "inf"}) == {"lr": 1e-05, "r": 8.0, "inf": float("inf")}
    assert trial_config({"lr": "0.001", "method": "lora", "lora_r": "8", "freeze": "True", "x": "None"}) == {
        "lr": 0.001, "method": "lora", "lora_r": 8, "freeze": True, "x": None}


def _searcher(tmp_path: Any) -> Any:
    from studies.trials import ChemtuneOptunaSearch

    def space(trial: Any) -> None:
        trial.suggest_float("lr", 1e-4, 1e-2, log=True)

    return ChemtuneOptunaSearch(space=space, metric=["valid_rmse", "trainable_params"], mode=["min", "min"],
                                study_name="mo", storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/o.db"),
                                seed=0, max_epochs=3)


def test_multi_objective_searcher_tells_values_prunes_and_fails(tmp_path: Any) -> None:
    """Complete: both values; stopped by ASHA: PRUNED (no report(), which Optuna refuses for several
    objectives); an objective missing from the result: FAIL, not left RUNNING."""
    searcher = _searcher(tmp_path)
    for trial_id in ("a", "b", "c"):
        assert searcher.suggest(trial_id) is not None
    searcher.on_trial_complete("a", {"valid_rmse": 1.0, "trainable_params": 10.0, "training_iteration": 3,
                                     "test_rmse": 1.1})
    searcher.on_trial_complete("b", {"valid_rmse": 2.0, "trainable_params": 5.0, "training_iteration": 1})
    searcher.on_trial_complete("c", {"valid_rmse": 1.0, "training_iteration": 3, "test_rmse": 1.0})
    study = optuna.load_study(study_name="mo", storage=f"sqlite:///{tmp_path}/o.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "FAIL"]
    assert study.trials[0].values == [1.0, 10.0] and study.metric_names == ["valid_rmse", "trainable_params"]
