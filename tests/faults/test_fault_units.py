"""Fault suite, fast part (no Ray): divergence, checkpoint integrity, orphans, names, secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pyarrow.fs import LocalFileSystem

from studies.cli import main as cli
from studies.health import TAG_END_REASON, diagnose, driver_lease, reconcile
from studies.names import check_name
from studies.redact import redact_url, worker_env
from studies.runner import launch, prepare
from studies.spec import parse_study
from studies.tracking import StudyPaths, StudyTracker, register_best, save_state
from tests.conftest import tiny_study
from trainables import TASKS, NullReporter
from trainables.base import resumable_folder
from trainables.checkpoints import checkpoint_problem, newest_valid, seal_checkpoint
from trainables.errors import StudyError
from trainables.faults import FAULTS_ENV, STATE_ENV, TrialDiverged, check_finite, inject

# -- scenario 4 (bad trials), without Ray: the trainer itself fails on a NaN loss ------------------

def test_check_finite_names_epoch_and_step() -> None:
    assert check_finite(0.5, 1, 0) == 0.5
    for bad in (float("nan"), float("inf")):
        with pytest.raises(TrialDiverged, match=r"became (nan|inf) at epoch 3, step 7"):
            check_finite(bad, 3, 7)


def test_injected_faults_fire_only_where_and_as_often_as_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STATE_ENV, str(tmp_path))
    monkeypatch.setenv(FAULTS_ENV, json.dumps([
        {"id": "n", "kind": "nan", "epoch": 2, "match": {"lr": 0.001}, "times": 2},
        {"id": "o", "kind": "oom", "epoch": 1, "match": {"method": "lora"}},
    ]))
    loss = torch.tensor(1.0)
    assert inject("step", {"lr": 0.001}, 1, loss) is loss  # wrong epoch
    assert inject("step", {"lr": 0.002}, 2, loss) is loss  # other config
    assert torch.isnan(inject("step", {"lr": 0.001}, 2, loss)) and torch.isnan(inject("step", {"lr": 0.001}, 2, loss))
    assert inject("step", {"lr": 0.001}, 2, loss) is loss  # fired its 2 times
    with pytest.raises(torch.OutOfMemoryError, match="injected"):
        inject("step", {"method": "lora"}, 1, loss)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.0", "n.1", "o.0"]
    monkeypatch.setenv(FAULTS_ENV, json.dumps([{"kind": "segfault"}]))
    with pytest.raises(ValueError, match=r"CHEMTUNE_FAULTS\[0\]\.kind: 'segfault'"):
        inject("step", {}, 1, loss)


def test_a_slow_fault_sleeps_at_every_epoch_and_fails_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv(STATE_ENV, str(tmp_path))
    monkeypatch.setenv(FAULTS_ENV, json.dumps([{"id": "s", "kind": "slow", "epoch": "any", "seconds": 0.2, "times": 2}]))
    loss = torch.tensor(1.0)
    started = time.monotonic()
    assert inject("step", {}, 1, loss) is loss and inject("step", {}, 7, loss) is loss
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    assert inject("step", {}, 2, loss) is loss  # fired its 2 times: no more sleep
    assert time.monotonic() - started < 0.2


def test_a_nan_loss_fails_the_trial_before_it_reaches_the_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STATE_ENV, str(tmp_path / "faults"))
    monkeypatch.setenv(FAULTS_ENV, json.dumps([{"kind": "nan", "epoch": 2}]))
    spec = parse_study(tiny_study(name="nan", dataset={"limit": 120}, max_epochs=3))
    prepared = prepare(spec)
    reporter = NullReporter(keep_dir=tmp_path / "ckpt")
    with pytest.raises(TrialDiverged, match="at epoch 2, step 0"):
        TASKS.get("property").train({"method": "full", "batch_size": 32}, prepared.payload, spec, reporter)
    assert [h["epoch"] for h in reporter.history] == [1]  # epoch 1 reported, epoch 2 never
    state = torch.load(tmp_path / "ckpt" / "state.pt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert checkpoint_problem(tmp_path / "ckpt") is None  # the kept checkpoint is sealed


# -- scenario 5 (checkpoint integrity) ---------------------------------------------------------------

def _checkpoint(folder: Path, epoch: int) -> Path:
    folder.mkdir(parents=True)
    torch.save({"epoch": epoch}, folder / "state.pt")
    (folder / "metrics.json").write_text(json.dumps({"epoch": epoch}))
    seal_checkpoint(folder)
    return folder


def test_checkpoint_problems_are_named(tmp_path: Path) -> None:
    good = _checkpoint(tmp_path / "checkpoint_000001", 1)
    assert checkpoint_problem(good) is None
    unsealed = tmp_path / "unsealed"
    unsealed.mkdir()
    torch.save({}, unsealed / "state.pt")
    assert "no checkpoint.json" in checkpoint_problem(unsealed)
    truncated = _checkpoint(tmp_path / "truncated", 1)
    data = (truncated / "state.pt").read_bytes()
    (truncated / "state.pt").write_bytes(data[: len(data) // 2])
    assert "state.pt does not match" in checkpoint_problem(truncated)
    missing = _checkpoint(tmp_path / "missing", 1)
    (missing / "metrics.json").unlink()
    assert "metrics.json is missing" in checkpoint_problem(missing)
    assert "no such checkpoint folder" in checkpoint_problem(tmp_path / "gone")


def test_resume_falls_back_to_the_newest_valid_checkpoint(tmp_path: Path) -> None:
    trial = tmp_path / "trial"
    first = _checkpoint(trial / "checkpoint_000000", 1)
    second = _checkpoint(trial / "checkpoint_000001", 2)
    third = _checkpoint(trial / "checkpoint_000002", 3)
    (third / "checkpoint.json").unlink()  # killed while writing the newest
    ray_checkpoint = SimpleNamespace(path=str(third), filesystem=LocalFileSystem())
    assert resumable_folder(ray_checkpoint) == second
    import shutil

    shutil.rmtree(second)  # the newest complete one deleted by hand
    assert resumable_folder(ray_checkpoint) == first
    shutil.rmtree(third)  # Tune's own pointer gone too: still the newest valid one
    assert resumable_folder(ray_checkpoint) == first
    folder, skipped = newest_valid(third, [first])
    assert folder == first and len(skipped) == 1
    shutil.rmtree(first)
    assert resumable_folder(ray_checkpoint) is None  # none valid: the trial starts over


def test_a_broken_checkpoint_is_refused_on_load(tmp_path: Path) -> None:
    spec = parse_study(tiny_study(name="broken", dataset={"limit": 120}, max_epochs=1))
    prepared = prepare(spec)
    broken = _checkpoint(tmp_path / "ckpt", 1)
    (broken / "state.pt").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="cannot resume: .*state.pt does not match"):
        TASKS.get("property").train({"method": "full"}, prepared.payload, spec, NullReporter(resume_from=broken))


# -- scenario 3 (orphan reconciliation) and `chemtune doctor` ------------------------------------------

def _dead_lease() -> dict:
    proc = subprocess.Popen([sys.executable, "-c", "import os, json, psutil, socket; print(json.dumps("
                             "{'host': socket.gethostname(), 'pid': os.getpid(), "
                             "'create_time': psutil.Process().create_time()}))"], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=60)
    return json.loads(out)


def _study_with_orphans(root: Path, lease: dict) -> tuple[StudyPaths, StudyTracker, list[str]]:
    paths = StudyPaths.default(root)
    spec = parse_study(tiny_study(name="orphans", num_trials=3))
    tracker = StudyTracker(paths.mlflow_uri, spec, paths)
    runs = []
    for trial_id in ("t1", "t2", "t3"):
        run = tracker.client.create_run(tracker.experiment_id, tags={
            "mlflow.parentRunId": tracker.parent_run_id, "chemtune.trial_id": trial_id, "chemtune.role": "trial"})
        runs.append(run.info.run_id)
    tracker.client.set_terminated(runs[2], "FINISHED")
    paths.study_file("orphans").parent.mkdir(parents=True, exist_ok=True)
    paths.study_file("orphans").write_text(json.dumps(tiny_study(name="orphans", num_trials=3)))
    save_state(paths, "orphans", {"parent_run_id": tracker.parent_run_id, "tracking_uri": paths.mlflow_uri,
                                  "optuna_url": paths.optuna_url, "address": None, "driver": lease})
    return paths, tracker, runs


def test_a_dead_drivers_runs_are_reconciled_with_a_reason(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lease = _dead_lease()
    paths, tracker, runs = _study_with_orphans(tmp_path, lease)
    assert cli(["doctor", "orphans", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"PID {lease['pid']} on {lease['host']}: gone" in out
    assert "orphaned runs (RUNNING, no live driver): 2" in out and "(trial t1)" in out and "(trial t2)" in out
    assert "MLflow trial runs: FINISHED 1, RUNNING 2" in out
    assert "mark 2 orphaned trial run(s) and the study run KILLED" in out
    tic = time.monotonic()
    ended = reconcile(paths, "orphans")
    assert time.monotonic() - tic < 60
    assert set(ended) == {runs[0], runs[1], tracker.parent_run_id}
    for run_id in ended:
        run = tracker.client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert f"its driver (PID {lease['pid']} on {lease['host']}) is gone" in run.data.tags[TAG_END_REASON]
    assert tracker.client.get_run(runs[2]).info.status == "FINISHED"
    assert diagnose(paths, "orphans").orphans == [] and reconcile(paths, "orphans") == []


def test_reconcile_refuses_while_the_driver_lives(tmp_path: Path) -> None:
    import psutil

    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # another live driver
    try:
        lease = {**driver_lease(), "pid": driver.pid, "create_time": psutil.Process(driver.pid).create_time()}
        paths, tracker, runs = _study_with_orphans(tmp_path, lease)
        with pytest.raises(StudyError, match=f"being run by PID {driver.pid}"):
            reconcile(paths, "orphans")
        assert tracker.client.get_run(runs[0]).info.status == "RUNNING"
        assert diagnose(paths, "orphans").resume_plan[0].startswith("nothing: the driver is running")
    finally:
        driver.kill()
        driver.wait(30)
    assert set(reconcile(paths, "orphans")) == {runs[0], runs[1], tracker.parent_run_id}  # once it is gone


def test_the_same_process_may_resume_what_it_launched(tmp_path: Path) -> None:
    paths, tracker, runs = _study_with_orphans(tmp_path, driver_lease())  # launch() earlier in this process
    assert set(reconcile(paths, "orphans")) == {runs[0], runs[1], tracker.parent_run_id}


# -- scenario 9 (security): names and secrets ---------------------------------------------------------

@pytest.mark.parametrize("name", ["../etc", "a/../b", "/abs/path", "a..b", ".hidden", "nul\x00byte", "x" * 129, "", "a b"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(StudyError, match="name"):
        check_name("study", name)


def test_traversal_names_write_nothing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with pytest.raises(StudyError, match="may hold only"):
        launch(parse_study(tiny_study(name="a..b")), root=root)
    for name in ("../../x", "/tmp/x", "x" * 200):
        with pytest.raises(ValueError, match="name"):
            parse_study(tiny_study(name=name))
        with pytest.raises(ValueError, match="experiment"):
            parse_study(tiny_study(tracking={"experiment": name}))
    assert cli(["resume", "../../etc/passwd", "--root", str(root)]) == 2  # a StudyError, as exit code 2
    assert cli(["doctor", "/etc/passwd", "--root", str(root)]) == 2
    with pytest.raises(StudyError, match="model name '../m'"):
        register_best("s", "../m", f"sqlite:///{tmp_path / 'm.db'}")
    assert not root.exists() and not (tmp_path / "m.db").exists()


def test_no_credential_reaches_the_workers_env() -> None:
    env = {"CHEMTUNE_DATA_DIR": "/data", "CHEMTUNE_API_TOKEN": "s3cr3t", "CHEMTUNE_DB_PASSWORD": "s3cr3t",
           "CHEMTUNE_S3_KEY": "s3cr3t", "CHEMTUNE_SIGNING_SECRET": "s3cr3t",
           "CHEMTUNE_DB": "postgresql://u:s3cr3t@db/x", "MLFLOW_TRACKING_PASSWORD": "s3cr3t", "HOME": "/root"}
    out = worker_env(env, "http://admin:s3cr3t@mlflow:5000")
    assert "s3cr3t" not in json.dumps(out)
    assert out == {"CHEMTUNE_DATA_DIR": "/data", "CHEMTUNE_DB": "postgresql://u:***@db/x",
                   "MLFLOW_TRACKING_URI": "http://admin:***@mlflow:5000"}
    assert redact_url("a postgresql+psycopg2://me:p%40ss@h:5432/db b") == "a postgresql+psycopg2://me:***@h:5432/db b"


def test_trial_env_hands_no_credential_to_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime_env the driver gives Ray (stored in its GCS) is the credential-free one, also inside a Ray job."""
    from studies.runner import trial_env

    for name in [k for k in os.environ if k.startswith("CHEMTUNE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CHEMTUNE_DATA_DIR", "/data")
    monkeypatch.setenv("CHEMTUNE_DB_PASSWORD", "s3cr3t")
    monkeypatch.setenv("CHEMTUNE_ACCESS_KEY", "s3cr3t")
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert trial_env("http://admin:s3cr3t@mlflow:5000") == {
        "CHEMTUNE_DATA_DIR": "/data", "MLFLOW_TRACKING_URI": "http://admin:***@mlflow:5000"}
    # A job that already sets the same URI (with its password) is the same setting, left to the job.
    job = {"runtime_env": {"env_vars": {"MLFLOW_TRACKING_URI": "http://admin:s3cr3t@mlflow:5000"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert trial_env("http://admin:s3cr3t@mlflow:5000") == {"CHEMTUNE_DATA_DIR": "/data"}


# -- scenario 6 (stale Optuna trials) ---------------------------------------------------------------

def _searcher(url: str):
    from optuna.distributions import FloatDistribution

    from studies.optuna_heartbeat import HeartbeatOptunaSearch, heartbeat_storage

    return HeartbeatOptunaSearch(space={"x": FloatDistribution(0, 1)}, metric="m", mode="min", study_name="hb",
                                 storage=heartbeat_storage(url, max_retry=1, interval=1, grace=2), seed=0,
                                 max_epochs=2)


def test_a_vanished_drivers_trial_fails_by_heartbeat_and_its_parameters_are_retried(tmp_path: Path) -> None:
    import optuna

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    dead = _searcher(url)
    lost = dead.suggest("lost")  # asked, then its driver vanished without telling Optuna
    held = dead.suggest("held")
    dead.save(str(tmp_path / "searcher.pkl"))  # Tune's experiment checkpoint knows both ...
    dead._beat_stop.set()  # ... and the driver is SIGKILLed: no more heartbeats
    time.sleep(3.5)  # > grace period
    restored = _searcher(url)
    restored.restore(str(tmp_path / "searcher.pkl"))
    del restored._ot_trials["lost"]  # ... say the checkpoint predates "lost" (asked just before the kill)
    retried = restored.suggest("new")
    time.sleep(2.5)  # a few beats of the new driver's thread: its trials stay alive
    assert restored._beat_thread.is_alive()
    restored._beat_stop.set()
    trials = {t.number: t for t in optuna.load_study(study_name="hb", storage=url).get_trials()}
    assert [trials[n].state.name for n in sorted(trials)] == ["FAIL", "RUNNING", "RUNNING"]
    assert retried == lost and trials[2].params == trials[0].params and held != lost
    assert trials[2].system_attrs["failed_trial"] == 0  # the retry of trial 0
    assert trials[1].params == held  # the restored trial was beaten for first, so it is not failed


def test_a_resume_retries_the_dead_drivers_orphans_first_without_waiting_for_staleness(tmp_path: Path) -> None:
    """Resumed at once after a kill (well inside the grace period), the orphan's retry is the next trial asked:
    waiting for staleness let fresh trials go first and left the retry WAITING after the study ended."""
    import optuna

    from studies.optuna_heartbeat import driver_gone

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    dead = _searcher(url)
    lost = dead.suggest("lost")
    dead.suggest("held")
    dead.save(str(tmp_path / "searcher.pkl"))
    dead._beat_stop.set()  # SIGKILLed; resumed right away: nothing is stale yet (grace 2 s)
    restored = _searcher(url)
    restored.restore(str(tmp_path / "searcher.pkl"))
    del restored._ot_trials["lost"]  # the checkpoint predates "lost"
    driver_gone("hb")  # what `chemtune resume` says after reconcile found the driver dead
    retried = restored.suggest("new")
    restored._beat_stop.set()
    trials = {t.number: t for t in optuna.load_study(study_name="hb", storage=url).get_trials()}
    assert [trials[n].state.name for n in sorted(trials)] == ["FAIL", "RUNNING", "RUNNING"]
    assert retried == lost and trials[2].system_attrs["failed_trial"] == 0


def test_a_resumed_trial_that_optuna_saw_finish_is_not_reported_again(tmp_path: Path) -> None:
    import optuna

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = _searcher(url)
    searcher.suggest("t")
    study = optuna.load_study(study_name="hb", storage=url)
    study.tell(study.trials[0].number, 0.5)  # told COMPLETE, then the driver died before Tune's checkpoint
    searcher.on_trial_result("t", {"m": 0.7, "training_iteration": 2})  # the resumed trial reports again
    searcher.on_trial_complete("t", {"m": 0.7, "training_iteration": 2})
    assert searcher._beat_thread.is_alive()  # the heartbeat thread keeps beating (interval 1 s)
    searcher._beat_stop.set()
    trial = optuna.load_study(study_name="hb", storage=url).trials[0]
    assert trial.state.name == "COMPLETE" and trial.value == 0.5 and trial.intermediate_values == {}


def test_a_finished_fit_stops_its_searchers_heartbeat_and_only_its_own(tmp_path: Path) -> None:
    """A process that outlives its study (a notebook, the test suite) must not keep beating and checking a
    storage that may be gone; another study's searcher on another thread keeps beating."""
    import threading

    from studies.optuna_heartbeat import stop_heartbeats

    mine = _searcher(f"sqlite:///{tmp_path / 'mine.db'}")
    mine.suggest("t0")  # the first suggest starts the beat, on the thread that runs Tune's loop
    other = _searcher(f"sqlite:///{tmp_path / 'other.db'}")
    started = threading.Thread(target=other.suggest, args=("t0",))
    started.start()
    started.join()
    assert mine._beat_thread.is_alive() and other._beat_thread.is_alive()
    assert stop_heartbeats() == 1
    assert not mine._beat_thread.is_alive() and other._beat_thread.is_alive()
    assert stop_heartbeats(started.ident) == 1 and not other._beat_thread.is_alive()
