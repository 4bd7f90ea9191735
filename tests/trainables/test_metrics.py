"""Metric semantics: every metric of every task has one split, one base name and the right direction."""

from __future__ import annotations

import pytest

from trainables import TASKS
from trainables.errors import StudyError
from trainables.metrics import direction, parse_metric, task_metrics

ALL = [(task, m.name) for task in TASKS.names() for m in task_metrics(task)]
# Larger is better exactly for these; everything else (losses, errors, invalid shares) is minimised.
LARGER_IS_BETTER = {"r2", "top1", "top3", "top5", "top10", "token_acc", "exact"}


def test_every_task_reports_valid_and_test_metrics():
    assert {name for task, name in ALL if task == "property"} == {
        f"{s}_{m}" for s in ("valid", "test") for m in ("mse", "rmse", "mae", "r2")}
    retro = {name for task, name in ALL if task == "retro"}
    assert {"valid_token_acc", "valid_top1", "valid_loss", "test_top10", "test_invalid", "test_token_acc"} <= retro
    assert "valid_top10" not in retro  # beam search runs on test only


@pytest.mark.parametrize(("task", "name"), ALL)
def test_split_base_and_direction(task: str, name: str):
    metric = parse_metric(name, task)
    assert metric.name == name and f"{metric.split}_{metric.base}" == name
    assert metric.split in ("valid", "test") and metric.base in TASKS.get(task).metrics + TASKS.get(task).test_metrics
    assert direction(name, task) == ("max" if metric.base in LARGER_IS_BETTER else "min")


def test_underscored_names_split_on_the_first_underscore():
    m = parse_metric("valid_token_acc", "retro")
    assert (m.split, m.base, m.direction) == ("valid", "token_acc", "max")
    assert m.on("test").name == "test_token_acc"


@pytest.mark.parametrize("name", ["valid_auc", "train_rmse", "rmse", "valid_top10"])
def test_unknown_metrics_name_the_choices(name: str):
    task = "retro" if name == "valid_top10" else "property"
    with pytest.raises(StudyError, match=f"metric '{name}' is not one the task reports; choose valid_"):
        parse_metric(name, task)
