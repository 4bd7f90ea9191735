"""Baselines as MLflow runs of a study: tagged, on the study's split hashes, labelled leaderboard rows, once."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from studies.baselines import fit_baselines
from studies.spec import parse_study
from studies.tracking import StudyPaths, StudyTracker, leaderboard
from tests.conftest import tiny_study
from trainables import TASKS, baselines


@pytest.fixture()
def study(tmp_path: Path):
    spec = parse_study(tiny_study(name="tiny-base", dataset={"limit": 100},
                                  baselines={"random_forest": True, "random_forest_trees": 20}))
    prepared = TASKS.get("property").prepare(spec)
    paths = StudyPaths.default(tmp_path)
    tracker = StudyTracker(paths.mlflow_uri, spec, paths)
    tracker.log_study("", prepared)
    return spec, prepared, tracker


def test_baseline_runs_are_tagged_rows_of_the_leaderboard(study) -> None:
    spec, prepared, tracker = study
    metrics = fit_baselines(spec, prepared, tracker.uri, tracker.experiment_id, tracker.parent_run_id, log=lambda m: None)
    assert set(metrics) == {"random_forest"}
    client = MlflowClient(tracker.uri)
    runs = client.search_runs([tracker.experiment_id], "tags.`chemtune.role` = 'baseline'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == tracker.parent_run_id
    for key, value in prepared.tags.items():  # the identical split
        assert run.data.tags[key] == value
    assert run.data.metrics["test_rmse"] == pytest.approx(metrics["random_forest"]["test_rmse"])
    assert run.data.params["n_estimators"] == "20"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"valid_predictions.csv", "test_predictions.csv"}

    board = leaderboard(spec.name, tracker.uri)
    row = board[board["trial"] == "baseline:random_forest"].iloc[0]
    assert row["role"] == "baseline" and row["valid_rmse"] == pytest.approx(run.data.metrics["valid_rmse"])
    assert row["test_r2"] == pytest.approx(run.data.metrics["test_r2"])

    # Fitted once per study: a resumed study does not fit it again.
    assert fit_baselines(spec, prepared, tracker.uri, tracker.experiment_id, tracker.parent_run_id, log=lambda m: None) == {}
    assert len(client.search_runs([tracker.experiment_id], "tags.`chemtune.role` = 'baseline'")) == 1


def test_a_crashing_baseline_ends_failed_not_running(study, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, prepared, tracker = study

    def broken(*args, **kwargs):
        raise RuntimeError("forest on fire")

    monkeypatch.setitem(baselines.BASELINES._entries, "random_forest", broken)
    messages: list[str] = []
    assert fit_baselines(spec, prepared, tracker.uri, tracker.experiment_id, tracker.parent_run_id, log=messages.append) == {}
    run = MlflowClient(tracker.uri).search_runs([tracker.experiment_id], "tags.`chemtune.role` = 'baseline'")[0]
    assert run.info.status == "FAILED" and "forest on fire" in run.data.tags["chemtune.error"]
    assert any("random_forest failed" in m for m in messages)
