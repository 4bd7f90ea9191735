"""Fault scenario 7 on the cluster stores: several `chemtune launch STUDY --join` processes on ONE study,
Optuna on PostgreSQL and MLflow on the authenticated server; every trial's result lands once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
import yaml
from support.local_cluster import LocalMlflowServer, LocalPostgres, LocalRayCluster

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
LONG = os.environ.get("CHEMTUNE_FAULTS_LONG") == "1"


def _record(scenario: str, **figures: Any) -> None:
    from tests.faults.conftest import record_figures

    record_figures(scenario, **figures)


def _joined(name: str, processes: int, share: int, tmp_path: Path, postgres: LocalPostgres,
            mlflow_server: LocalMlflowServer, ray_cluster: LocalRayCluster, study_dict: Any,
            timeout: float) -> dict[str, Any]:
    # A fresh database: the processes also race to create Optuna's tables (fixed in studies/join.py).
    optuna_url = postgres.create_database(f"optuna_{name.replace('-', '_')}")
    data = study_dict(name, tmp_path / "tune", num_trials=processes * share, max_epochs=1,
                      dataset={"name": "nci-logp", "limit": 100, "split": "random", "seed": 0})
    data["tracking"]["optuna_storage"] = optuna_url
    study = tmp_path / f"{name}.yaml"
    study.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env.update(PYTHONPATH=str(REPO), **mlflow_server.credentials)
    procs, logs = [], []
    tic = time.monotonic()
    for i in range(processes):  # each its own driver and store folder, as on separate machines
        logs.append(tmp_path / f"driver{i}.log")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "studies.cli", "launch", str(study), "--join", "--trials", str(share),
             "--address", ray_cluster.address, "--root", str(tmp_path / f"home{i}")],
            cwd=REPO, env=env, stdout=logs[-1].open("wb"), stderr=subprocess.STDOUT, start_new_session=True))
    codes = []
    try:
        for proc in procs:
            codes.append(proc.wait(max(1.0, timeout - (time.monotonic() - tic))))
    finally:
        for proc in procs:  # only what this test started, by process group
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
    wall = time.monotonic() - tic
    text = "\n".join(f"--- driver {i}\n" + log.read_text(errors="replace")[-3000:] for i, log in enumerate(logs))
    assert codes == [0] * processes, text
    assert "database is locked" not in text and "Traceback" not in text, text
    return {"optuna_url": optuna_url, "wall_s": wall}


def _check(name: str, processes: int, share: int, optuna_url: str, mlflow_server: LocalMlflowServer,
           monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for key, value in mlflow_server.credentials.items():
        monkeypatch.setenv(key, value)
    total = processes * share
    study = optuna.load_study(study_name=name, storage=optuna_url)
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * total
    assert sorted(t.number for t in trials) == list(range(total))  # unique numbers, none skipped
    client = mlflow.MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("chemtune.role") == "study"]
    assert parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1 == total
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["chemtune.state"] for r in children} == {"complete"}
    by_joiner: dict[str, int] = {}
    for run in children:
        by_joiner[run.data.tags["chemtune.joiner"]] = by_joiner.get(run.data.tags["chemtune.joiner"], 0) + 1
        assert len(client.get_metric_history(run.info.run_id, "valid_rmse")) == 1  # max_epochs points, once each
    assert sorted(by_joiner.values()) == [share] * processes  # each process ran exactly its share
    # no lost result: every Optuna trial points at its own run, and its value is that run's score
    runs_by_id = {r.info.run_id: r for r in children}
    assert sorted(t.user_attrs["mlflow_run_id"] for t in trials) == sorted(runs_by_id)
    for trial in trials:
        assert trial.value == pytest.approx(runs_by_id[trial.user_attrs["mlflow_run_id"]].data.metrics["valid_rmse"])
    assert int(parent.data.metrics["trials_complete"]) == total  # counted over every process's runs
    assert parent.data.tags["chemtune.best_run_id"] == min(children, key=lambda r: r.data.metrics["valid_rmse"]).info.run_id
    return {"trials_finished": total, "runs_lost": 0}


@pytest.mark.long  # ~160-400 s; CI runs scenario 7 on SQLite (test_driver_kills) and the join units (test_join_units)
def test_two_processes_join_one_study(tmp_path: Path, postgres: LocalPostgres, mlflow_server: LocalMlflowServer,
                                      ray_cluster: LocalRayCluster, study_dict: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _joined("join-2x2", 2, 2, tmp_path, postgres, mlflow_server, ray_cluster, study_dict, timeout=900)
    figures = _check("join-2x2", 2, 2, out["optuna_url"], mlflow_server, monkeypatch)
    _record("7-joined-2x2-postgres", faults_injected=0, **figures, wall_s=round(out["wall_s"], 1))


@pytest.mark.faults_long
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not LONG, reason="long fault variant: set CHEMTUNE_FAULTS_LONG=1 (benchmarks/fault_figures.py)")
def test_four_processes_join_one_study(tmp_path: Path, postgres: LocalPostgres, mlflow_server: LocalMlflowServer,
                                       ray_cluster: LocalRayCluster, study_dict: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _joined("join-4x5", 4, 5, tmp_path, postgres, mlflow_server, ray_cluster, study_dict, timeout=1700)
    figures = _check("join-4x5", 4, 5, out["optuna_url"], mlflow_server, monkeypatch)
    _record("7-joined-4x5-postgres", faults_injected=0, **figures, wall_s=round(out["wall_s"], 1))
