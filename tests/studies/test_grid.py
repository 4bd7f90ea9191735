"""Grid studies: the study schema checks the grid, and the real OptunaSearch + GridSampler gives every
row exactly once, also when all trials are asked for before any finishes (concurrent trials)."""

import pytest

from studies.grid import grid_points
from studies.runner import _searcher
from studies.spec import parse_study
from tests.conftest import TINY_STUDIES
from trainables.errors import StudyError
from trainables.retro.treatments import PAPER_TREATMENTS

FIXED = {"gamma": 0, "lr": 0.001, "label_smoothing": 0.0, "augment_prob": 0.0, "batch_size": 16, "lora_rank": 4,
         "mlp_kind": "paper"}


def _grid_study(**changes):
    study = {**TINY_STUDIES["retro"], "name": "grid", "sampler": "grid", "fixed": dict(FIXED),
             "grid": {"treatment": list(PAPER_TREATMENTS)}, "num_trials": 15}
    study.update(changes)
    return parse_study(study)


@pytest.mark.parametrize("concurrent", [False, True])
def test_each_row_of_the_treatment_table_runs_once(tmp_path, concurrent):
    spec = _grid_study()
    searcher = _searcher(spec, f"sqlite:///{tmp_path / 'optuna.db'}")
    configs = []
    for i in range(spec.num_trials):
        configs.append(searcher.suggest(f"t{i}"))
        if not concurrent:
            searcher.on_trial_complete(f"t{i}", {"valid_top1": 0.1 * (i % 3), "training_iteration": 1})
    if concurrent:
        for i in range(spec.num_trials):
            searcher.on_trial_complete(f"t{i}", {"valid_top1": 0.5, "training_iteration": 1})
    rows = [c["treatment"] for c in configs]
    assert sorted(rows) == sorted(PAPER_TREATMENTS)  # each of the 15 rows exactly once
    for c in configs:
        assert c["lr"] == 0.001 and c["gamma"] == 0
        assert ("lora_rank" in c) == ("lora" in c["treatment"])


def test_gamma_sweep_grid_runs_each_gamma_once(tmp_path):
    gammas = [round(0.1 * i, 1) for i in range(11)]
    fixed = {k: v for k, v in FIXED.items() if k not in ("gamma", "lora_rank", "mlp_kind")} | {"treatment": "full"}
    spec = _grid_study(fixed=fixed, grid={"gamma": gammas}, num_trials=11,
                       options={**TINY_STUDIES["retro"]["options"], "teacher_csv": str(_teacher(tmp_path))})
    searcher = _searcher(spec, f"sqlite:///{tmp_path / 'optuna.db'}")
    got = [searcher.suggest(f"t{i}")["gamma"] for i in range(11)]
    assert sorted(got) == gammas  # exact values, no float drift from a stepped float distribution
    assert grid_points({"gamma": gammas}) == [{"gamma": g} for g in gammas]


def _teacher(tmp_path):
    path = tmp_path / "teacher.csv"
    path.write_text("product,prediction\nCCO,CC=O\n")
    return path


@pytest.mark.parametrize("changes, message", [
    ({"num_trials": 12}, r"num_trials: 12, but the grid has 15 combinations"),
    ({"fixed": {k: v for k, v in FIXED.items() if k != "lr"}}, r"grid: fix every other parameter .*free: \['lr'\]"),
    ({"fixed": {k: v for k, v in FIXED.items() if k != "lora_rank"}}, r"free: \['lora_rank'\]"),
    ({"grid": {"treatment": ["full", "full"]}, "num_trials": 2}, r"grid.treatment: a value is listed twice"),
    ({"grid": {"colour": [1]}, "num_trials": 1}, r"grid.colour: unknown parameter"),
    ({"grid": {"gamma": [0.0, 1.5]}, "num_trials": 2,
      "fixed": {k: v for k, v in FIXED.items() if k != "gamma"} | {"treatment": "full"}}, r"grid.gamma: Input should be less than or equal to 1"),
    ({"grid": {"treatment": ["full", "mlp_end+fix_decoder"]}, "num_trials": 2}, r"write 'mlp_end\+fix_decoder' as"),
    ({"sampler": "tpe"}, r"grid: set sampler: grid"),
    ({"grid": {}}, r"sampler 'grid' needs grid"),
])
def test_bad_grids_name_the_key(changes, message):
    with pytest.raises(StudyError, match=message):
        _grid_study(**changes)
