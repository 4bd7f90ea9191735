"""Scenario 7's bookkeeping without Ray: joining one study (the Optuna rendezvous), ending it with the last
joiner, and orphan reconciliation that spares the runs of joined drivers still alive."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import psutil
import pytest

from studies import join
from studies.health import TAG_DRIVER, TAG_END_REASON, driver_lease, reconcile
from studies.spec import parse_study
from studies.tracking import StudyPaths, StudyTracker, save_state
from tests.conftest import tiny_study
from tests.faults.test_fault_units import _dead_lease
from trainables.errors import StudyError


@pytest.fixture
def live_driver():
    """Another process that is alive (a second joined driver on this host)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield {**driver_lease(), "pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time()}
    finally:
        proc.kill()
        proc.wait(30)


def _join(name: str, url: str, joiner: str, monkeypatch: pytest.MonkeyPatch, make=lambda: "parent-1", timeout=5.0):
    monkeypatch.setattr(join, "_joiner_id", lambda: joiner)  # several joiners in one test process
    return join.join_study(name, "min", url, make, timeout=timeout)


def test_one_process_creates_the_study_and_its_parent_run_the_others_attach(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    made = []
    first = _join("shared", url, "a", monkeypatch, make=lambda: made.append(1) or "parent-1")
    second = _join("shared", url, "b", monkeypatch, make=lambda: made.append(2) or "parent-2")
    assert (first.creator, second.creator) == (True, False) and made == [1]  # one parent run, made once
    assert first.parent_run_id == second.parent_run_id == "parent-1"
    assert (first.slot, second.slot) == (0, 1)  # the second samples with another seed
    assert first.experiment != second.experiment  # each its own Tune experiment
    attrs = optuna.load_study(study_name="shared", storage=url).user_attrs
    assert attrs[join.JOINER_PREFIX + "b"]["state"] == "running" and attrs[join.PARENT_ATTR] == "parent-1"


def test_joining_a_study_launched_without_join_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="plain", storage=url)  # as a launch without --join leaves it
    with pytest.raises(StudyError, match="'plain' exists in the Optuna storage but has no MLflow parent run"):
        _join("plain", url, "a", monkeypatch, timeout=1)


def test_the_last_joiner_closes_the_parent_run_and_its_dead_peers_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      live_driver: dict) -> None:
    paths = StudyPaths.default(tmp_path)
    spec = parse_study(tiny_study(name="joined"))
    tracker = StudyTracker(paths.mlflow_uri, spec, paths)
    client, url = tracker.client, paths.optuna_url
    a = _join("joined", url, "a", monkeypatch, make=lambda: tracker.parent_run_id)
    b = _join("joined", url, "b", monkeypatch)
    dead = _dead_lease()

    def run(joiner: str, lease: dict) -> str:
        return client.create_run(tracker.experiment_id, tags={
            "mlflow.parentRunId": tracker.parent_run_id, "chemtune.role": "trial", "chemtune.joiner": joiner,
            TAG_DRIVER: json.dumps(lease)}).info.run_id

    mine, peers, orphan = run("a", driver_lease()), run("b", live_driver), run("c", dead)
    b.study.set_user_attr(join.JOINER_PREFIX + "b", {**live_driver, "state": "running"})  # b runs in another process
    assert join.leave_study(a, client, "FINISHED") is False  # b still runs trials
    assert client.get_run(mine).info.status == "KILLED"  # a's own leftovers only
    assert client.get_run(peers).info.status == client.get_run(orphan).info.status == "RUNNING"
    assert client.get_run(tracker.parent_run_id).info.status == "RUNNING"
    client.set_terminated(peers, "FINISHED")
    monkeypatch.setattr(join, "_joiner_id", lambda: "b")
    b.study.set_user_attr(join.JOINER_PREFIX + "b", {**driver_lease(), "state": "running"})
    assert join.leave_study(b, client, "FINISHED") is True and b.last
    assert client.get_run(tracker.parent_run_id).info.status == "FINISHED"
    ended = client.get_run(orphan)
    assert ended.info.status == "KILLED" and "its joined driver is gone" in ended.data.tags[TAG_END_REASON]


def test_reconcile_spares_runs_whose_own_driver_lives(tmp_path: Path, live_driver: dict) -> None:
    paths = StudyPaths.default(tmp_path)
    spec = parse_study(tiny_study(name="mixed"))
    tracker = StudyTracker(paths.mlflow_uri, spec, paths)
    runs = {}
    for name, lease in (("alive", live_driver), ("dead", _dead_lease()), ("untagged", None)):
        tags = {"mlflow.parentRunId": tracker.parent_run_id, "chemtune.role": "trial", "chemtune.trial_id": name}
        if lease:
            tags[TAG_DRIVER] = json.dumps(lease)
        runs[name] = tracker.client.create_run(tracker.experiment_id, tags=tags).info.run_id
    save_state(paths, "mixed", {"parent_run_id": tracker.parent_run_id, "tracking_uri": paths.mlflow_uri,
                                "optuna_url": paths.optuna_url, "address": None, "driver": _dead_lease()})
    assert set(reconcile(paths, "mixed")) == {runs["dead"], runs["untagged"]}
    status = {k: tracker.client.get_run(v).info.status for k, v in runs.items()}
    assert status == {"alive": "RUNNING", "dead": "KILLED", "untagged": "KILLED"}
    assert tracker.client.get_run(tracker.parent_run_id).info.status == "RUNNING"  # a driver still works on it


def test_join_flags_are_checked_before_anything_runs(tmp_path: Path) -> None:
    from studies.runner import launch

    spec = parse_study(tiny_study(name="flags"))
    with pytest.raises(StudyError, match="--trials 3: give a share of 1 or more, with --join"):
        launch(spec, root=tmp_path, trials=3)
    with pytest.raises(StudyError, match="--trials 0"):
        launch(spec, root=tmp_path, join=True, trials=0)
    with pytest.raises(StudyError, match="--join and --restart exclude each other"):
        launch(spec, root=tmp_path, join=True, restart=True)
    assert not any(tmp_path.iterdir())  # nothing written
