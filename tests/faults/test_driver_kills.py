"""Scenario 2 (and 3 end to end): `chemtune launch` SIGKILLed at random points, each time followed by
`chemtune resume`; the study still ends with every trial done once, and nothing is lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from studies.health import TAG_END_REASON
from studies.tracking import StudyPaths
from tests.conftest import ROOT, tiny_study
from tests.faults.conftest import record_figures
from tests.support.local_cluster import LocalRayCluster, NodeSpec

# serial: tests/install-and-run.sh runs these after the parallel run, alone
pytestmark = [pytest.mark.slow, pytest.mark.serial]
STUDY_TIMEOUT_S = 900



@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster that outlives the drivers, as on a real cluster (and Ray starts once, not per driver)."""
    # one node (the head) with the CPUs: a second raylet registering on a loaded machine can miss Ray's 30 s window
    with LocalRayCluster([], head=NodeSpec(num_cpus=2), env={"PYTHONPATH": str(ROOT)}, timeout=300) as ray_cluster:
        yield ray_cluster.address


def _study(root: Path, name: str, num_trials: int, max_epochs: int) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tiny_study(
        name=name, num_trials=num_trials, max_epochs=max_epochs, dataset={"limit": 160},
        fixed={"method": "full", "batch_size": 32}, scheduler={"grace_period": max_epochs},
    )))
    return path


class _Driver:
    """A `chemtune` command in its own session; killed with everything it started (by PID)."""

    def __init__(self, args: list[str], root: Path, data: Path, address: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CHEMTUNE_DATA_DIR": str(data), "CHEMTUNE_HOME": str(root)}
        self.log = (root / "driver.log").open("a")
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "studies.cli", *args, "--root", str(root), "--address", address], cwd=ROOT,
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL the driver and its local Ray (a pre-empted driver node): no cleanup code runs."""
        try:
            family = [self.proc.pid] + [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = [self.proc.pid]
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise


def _log(root: Path) -> str:
    return (root / "driver.log").read_text()[-4000:]


def _finished(client: MlflowClient, name: str) -> int:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return 0
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`chemtune.role` = 'trial'")
    return sum(r.info.status == "FINISHED" for r in runs)


def _run_with_kills(root: Path, data: Path, address: str, study: Path, name: str, kills: int, seed: int) -> dict:
    rng = random.Random(seed)
    client = MlflowClient(StudyPaths.default(root).mlflow_uri)
    progress, walls = [], 0.0
    for cycle in range(kills):
        driver = _Driver(["launch", str(study)] if cycle == 0 else ["resume", name], root, data, address)
        deadline = time.monotonic() + 300
        # a random point once trials run: after the driver has a trial run (or finished one more)
        while time.monotonic() < deadline and driver.proc.poll() is None:
            experiment = client.get_experiment_by_name(name) if (root / "mlflow.db").exists() else None
            if experiment and client.search_runs([experiment.experiment_id], "tags.`chemtune.role` = 'trial'"):
                break
            time.sleep(1)
        # 1-4 s in: a whole 2-trial study takes ~9 s on a quiet machine, so a later kill would find it done
        time.sleep(rng.uniform(1, 4))
        assert driver.proc.poll() is None, f"the driver ended before kill {cycle + 1}: " + _log(root)
        driver.kill()
        walls += time.monotonic() - driver.started
        progress.append(_finished(client, name))
    final = _Driver(["resume", name], root, data, address)
    assert final.wait(STUDY_TIMEOUT_S) == 0, _log(root)
    walls += time.monotonic() - final.started
    progress.append(_finished(client, name))
    return {"progress": progress, "wall_s": walls}


def _check_study(root: Path, name: str, num_trials: int, max_epochs: int) -> dict:
    client = MlflowClient(StudyPaths.default(root).mlflow_uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("chemtune.role") == "study"]
    children = [r for r in runs if r.data.tags.get("chemtune.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert len(finished) == num_trials
    assert len({r.data.tags["chemtune.trial_id"] for r in children}) == len(children)  # one run per Tune trial
    for run in children:  # nothing RUNNING; a trial lost with a driver is KILLED with the reason
        assert run.info.status in {"FINISHED", "KILLED"}
        if run.info.status == "KILLED":
            assert "driver" in run.data.tags[TAG_END_REASON]
    for run in finished:  # every epoch exactly once, in order
        epochs = client.get_metric_history(run.info.run_id, "epoch")
        assert sorted((m.step, m.value) for m in epochs) == [(e, e) for e in range(1, max_epochs + 1)]
    study = optuna.load_study(study_name=name, storage=StudyPaths.default(root).optuna_url)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == num_trials and set(states) <= {"COMPLETE", "FAIL"}
    assert len({t.number for t in study.trials}) == len(study.trials)
    return {"trials_finished": len(finished), "runs_killed_by_driver_loss": len(children) - len(finished),
            "optuna_fail_stale": states.count("FAIL"), "runs_lost": 0}  # every assertion above held


# Known load-sensitive flake (seen under a loaded 2-core machine, never on a quiet one): Ray cancels both trial
# actors before they start ("The actor never ran - it was cancelled before it started running"), so the
# driver ends before the first kill. One rerun, and only for that symptom: any other failure fails at once.
@pytest.mark.flaky(reruns=1, only_rerun=["The actor never ran - it was cancelled before it started running"])
def test_driver_killed_once_then_resumed(tmp_path: Path, shared_data: Path, cluster: str) -> None:
    study = _study(tmp_path, "drv", num_trials=2, max_epochs=6)  # long enough that the kill lands mid-study
    out = _run_with_kills(tmp_path, shared_data, cluster, study, "drv", kills=1, seed=0)
    assert out["progress"] == sorted(out["progress"])  # progress never goes backwards
    figures = _check_study(tmp_path, "drv", 2, 6)
    record_figures("2-driver-killed-short", faults_injected=1, **figures, wall_s=round(out["wall_s"], 1))


@pytest.mark.faults_long
def test_driver_killed_repeatedly_costs_at_most_2_5x(tmp_path: Path, shared_data: Path, cluster: str) -> None:
    num_trials, max_epochs = 4, 3
    kills = random.Random(1).randint(3, 5)
    plain_root = Path(tempfile.mkdtemp(dir=tmp_path))
    tic = time.monotonic()
    plain = _Driver(["launch", str(_study(plain_root, "plain", num_trials, max_epochs))], plain_root, shared_data,
                    cluster)
    assert plain.wait(STUDY_TIMEOUT_S) == 0
    uninterrupted = time.monotonic() - tic
    study = _study(tmp_path, "drv", num_trials, max_epochs)
    out = _run_with_kills(tmp_path, shared_data, cluster, study, "drv", kills=kills, seed=1)
    assert out["progress"] == sorted(out["progress"])
    figures = _check_study(tmp_path, "drv", num_trials, max_epochs)
    ratio = out["wall_s"] / uninterrupted
    record_figures("2-driver-killed-repeatedly", faults_injected=kills, **figures, progress=out["progress"],
                   wall_s=round(out["wall_s"], 1), uninterrupted_s=round(uninterrupted, 1), wall_ratio=round(ratio, 2))
    assert ratio <= 2.5


@pytest.mark.faults_long
def test_two_studies_at_once_on_the_embedded_sqlite_store(tmp_path: Path, shared_data: Path, cluster: str) -> None:
    """Scenario 7, SQLite part: two drivers write one MLflow SQLite file and one Optuna SQLite file at once."""
    num_trials, max_epochs = 3, 2
    drivers = [_Driver(["launch", str(_study(tmp_path, name, num_trials, max_epochs))], tmp_path, shared_data, cluster)
               for name in ("sqlite-a", "sqlite-b")]
    codes = [d.wait(STUDY_TIMEOUT_S) for d in drivers]
    log = _log(tmp_path)
    assert codes == [0, 0], log
    assert "database is locked" not in log
    finished = 0
    for name in ("sqlite-a", "sqlite-b"):
        figures = _check_study(tmp_path, name, num_trials, max_epochs)  # exact epoch histories, all COMPLETE
        assert figures["runs_killed_by_driver_loss"] == 0 and figures["optuna_fail_stale"] == 0
        finished += figures["trials_finished"]
    record_figures("7-two-studies-on-sqlite", faults_injected=0, trials_finished=finished, runs_lost=0)
