"""The leaderboard (and so ``register``) sorts every metric of every task best first."""

from __future__ import annotations

from pathlib import Path

import pytest

from studies.spec import parse_study
from studies.tracking import StudyPaths, StudyTracker, leaderboard
from tests.conftest import tiny_study
from trainables import TASKS
from trainables.metrics import task_metrics

ALL = [(task, m.name, m.direction) for task in TASKS.names() for m in task_metrics(task)]


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> StudyTracker:
    paths = StudyPaths.default(Path(tmp_path_factory.mktemp("board")))
    return StudyTracker(paths.mlflow_uri, parse_study(tiny_study(name="board")), paths)


@pytest.mark.parametrize(("task", "metric", "mode"), ALL, ids=[f"{t}-{m}" for t, m, _ in ALL])
def test_leaderboard_sorts_best_first(tracker: StudyTracker, task: str, metric: str, mode: str) -> None:
    client = tracker.client
    # The board reads the task's rule from the study run (as the tracker records it for a study of that task).
    client.set_tag(tracker.parent_run_id, "chemtune.task", task)
    client.set_tag(tracker.parent_run_id, "chemtune.maximize", ",".join(sorted(TASKS.get(task).maximize)))
    runs = []
    for trial_id, value in [("low", 0.1), ("high", 0.9), ("mid", 0.5)]:
        run = client.create_run(tracker.experiment_id, tags={
            "mlflow.parentRunId": tracker.parent_run_id, "chemtune.trial_id": trial_id, "chemtune.role": "trial"})
        client.log_metric(run.info.run_id, metric, value)
        runs.append(run.info.run_id)
    try:
        board = leaderboard("board", tracker.uri, metric=metric).dropna(subset=[metric])
        board = board[board[metric].isin([0.1, 0.5, 0.9])]
        assert list(board[metric])[:3] == ([0.9, 0.5, 0.1] if mode == "max" else [0.1, 0.5, 0.9])
    finally:  # two tasks may report the same metric (token_acc): the next case sees only its own runs
        for run_id in runs:
            client.delete_run(run_id)
