from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from studies.spec import parse_study
from studies.tracking import StudyPaths, StudyTracker, close_study_run, leaderboard
from tests.conftest import tiny_study


@pytest.fixture()
def tracker(tmp_path: Path) -> StudyTracker:
    paths = StudyPaths.default(tmp_path)
    return StudyTracker(paths.mlflow_uri, parse_study(tiny_study(name="tracked")), paths)


def _trial(tracker: StudyTracker, trial_id: str, rmse: float | None) -> str:
    run = tracker.client.create_run(tracker.experiment_id, tags={
        "mlflow.parentRunId": tracker.parent_run_id, "chemtune.trial_id": trial_id, "chemtune.role": "trial"})
    if rmse is not None:
        tracker.client.log_metric(run.info.run_id, "valid_rmse", rmse)
    return run.info.run_id


def test_a_dead_drivers_runs_are_closed_as_killed(tracker: StudyTracker) -> None:
    running = _trial(tracker, "a", 1.0)
    done = _trial(tracker, "b", 2.0)
    tracker.client.set_terminated(done, "FINISHED")
    close_study_run(MlflowClient(tracker.uri), tracker.parent_run_id, "KILLED")
    status = {r: tracker.client.get_run(r).info.status for r in (running, done, tracker.parent_run_id)}
    assert status == {running: "KILLED", done: "FINISHED", tracker.parent_run_id: "KILLED"}


def test_leaderboard_puts_unscored_trials_last(tracker: StudyTracker) -> None:
    for trial_id, rmse in [("a", 0.9), ("b", None), ("c", 0.7)]:
        _trial(tracker, trial_id, rmse)
    board = leaderboard("tracked", tracker.uri)
    assert list(board["trial"]) == ["c", "a", "b"] and list(board["rank"]) == [1, 2, 3]
    assert list(leaderboard("tracked", tracker.uri, top=1)["trial"]) == ["c"]


def test_unknown_study(tracker: StudyTracker) -> None:
    with pytest.raises(ValueError, match="no study named 'other'"):
        leaderboard("other", tracker.uri)
