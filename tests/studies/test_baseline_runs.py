"""Baselines as MLflow runs of a study: tagged, on the study's split hashes, labelled leaderboard rows, once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient

from studies.baselines import BaselineJob, fit_baselines
from studies.health import TAG_END_REASON
from studies.spec import parse_study
from studies.tracking import StudyPaths, StudyTracker, leaderboard
from tests.conftest import tiny_study
from trainables import TASKS
from trainables.faults import FAULTS_ENV, STATE_ENV
from trainables.property import baselines


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


def test_a_remote_baseline_fits_beside_its_caller_and_one_cut_short_ends_killed(
        study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver goes on (to run trials) while a Ray task fits the baseline; a study that ends first leaves
    no baseline run RUNNING, and a resumed study fits that baseline again."""
    spec, prepared, tracker = study
    monkeypatch.setenv(FAULTS_ENV, json.dumps([{"kind": "slow", "at": "baseline", "seconds": 120, "id": "slow-rf",
                                                "match": {"baseline": "random_forest"}}]))
    monkeypatch.setenv(STATE_ENV, str(tmp_path / "faults"))
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=1, include_dashboard=False)  # its workers inherit the fault
    client = MlflowClient(tracker.uri)

    def runs() -> list:
        return client.search_runs([tracker.experiment_id], "tags.`chemtune.role` = 'baseline'")

    try:
        messages: list[str] = []
        job = BaselineJob(spec, prepared, tracker.uri, tracker.experiment_id, tracker.parent_run_id, messages.append)
        tic = time.monotonic()
        job.poll()
        deadline = time.monotonic() + 60
        while not (tmp_path / "faults" / "slow-rf.0").exists():  # the task has started its 120 s fit
            assert time.monotonic() < deadline, messages
            job.poll()
            time.sleep(0.5)
        assert time.monotonic() - tic < 100 and job.pending  # poll never waited for the fit
        assert [r.info.status for r in runs()] == ["RUNNING"]
        job.cancel()
        assert not job.pending
        (run,) = runs()
        assert run.info.status == "KILLED" and "before the baseline was fitted" in run.data.tags[TAG_END_REASON]

        again = BaselineJob(spec, prepared, tracker.uri, tracker.experiment_id, tracker.parent_run_id, messages.append,
                            remote=False)  # (a remote fit to the end: tests/studies/test_quality_e2e.py)
        assert again.pending  # not FINISHED: fitted again (the slow fault fired once already)
        assert set(again.finish()) == {"random_forest"}
        assert sorted(r.info.status for r in runs()) == ["FINISHED", "KILLED"]
    finally:
        ray.shutdown()
