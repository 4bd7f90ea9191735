"""A study's health: which driver owns it, orphaned MLflow runs, checkpoints, and what ``resume`` would do.

The driver (``chemtune launch``/``resume``) records a lease in the study's state file: host, PID and the
process's start time (so a recycled PID is not mistaken for it). A run left RUNNING while no live driver
holds the lease is an orphan: its driver was killed. ``reconcile`` ends every orphan as KILLED with the
reason as a tag (``chemtune resume`` and ``chemtune doctor --reconcile`` call it); it refuses while the
driver is alive, so two drivers never run one study. Each trial run also carries its own driver's lease
(``chemtune.driver``): in a joined study (``launch --join``) a run whose driver lives is not an orphan.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from studies.store import TAG_DRIVER, TAG_TRIAL, StudyPaths
from trainables.checkpoints import checkpoint_problem
from trainables.errors import StudyError

__all__ = ["TAG_END_REASON", "TAG_DRIVER", "driver_lease", "driver_alive", "reconcile", "Diagnosis", "diagnose"]

TAG_END_REASON = "chemtune.end_reason"
_PARENT = "mlflow.parentRunId"


def driver_lease() -> dict[str, Any]:
    """This process as a study's driver."""
    import psutil

    return {"host": socket.gethostname(), "pid": os.getpid(), "create_time": psutil.Process().create_time()}


def driver_alive(lease: dict[str, Any] | None) -> bool:
    """Whether the recorded driver still runs (only decidable on its own host; elsewhere assumed gone)."""
    import psutil

    if not lease or lease.get("host") != socket.gethostname():
        return False
    try:
        process = psutil.Process(int(lease["pid"]))
        return abs(process.create_time() - float(lease["create_time"])) < 1.0 and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
        return False


def _state(paths: StudyPaths, name: str) -> dict[str, Any]:
    state_file = paths.state_file(name)
    if not state_file.exists():
        raise StudyError(f"no study named {name!r} was launched from {paths.root}")
    return json.loads(state_file.read_text())


def _running_runs(client: MlflowClient, parent_run_id: str) -> list[Any]:
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs(
        [experiment_id], filter_string=f"tags.`{_PARENT}` = '{parent_run_id}' and attributes.status = 'RUNNING'"
    )


def _run_driver_alive(run: Any) -> bool:
    """Whether the driver recorded on a trial run (``chemtune.driver``) is alive and is not this process."""
    try:
        lease = json.loads(run.data.tags.get(TAG_DRIVER) or "null")
    except ValueError:
        return False
    return bool(lease) and lease.get("pid") != os.getpid() and driver_alive(lease)


def reconcile(paths: StudyPaths, name: str) -> list[str]:
    """End the runs a dead driver left RUNNING as KILLED, reason tagged; returns their run ids.

    Raises:
        StudyError: The study's driver is still running.
    """
    state = _state(paths, name)
    lease = state.get("driver")
    # this very process launched it before (the Python API: launch, then resume): that call has returned
    own = bool(lease) and lease.get("pid") == os.getpid() and lease.get("host") == socket.gethostname()
    if driver_alive(lease) and not own:
        raise StudyError(f"study {name!r} is being run by PID {lease['pid']} on {lease['host']}; "
                         "stop it first (or wait for it to end)")
    client = MlflowClient(state["tracking_uri"])
    who = f"PID {lease['pid']} on {lease['host']}" if lease else "an unknown process"
    reason = (f"orphaned: its driver ({who}) is gone; marked KILLED by reconcile at "
              f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    ended, live = [], 0
    for run in _running_runs(client, state["parent_run_id"]):
        if _run_driver_alive(run):  # another driver of a joined study (launch --join) still runs it
            live += 1
            continue
        client.set_tag(run.info.run_id, TAG_END_REASON, reason)
        client.set_terminated(run.info.run_id, "KILLED")
        ended.append(run.info.run_id)
    parent = client.get_run(state["parent_run_id"])
    if parent.info.status == "RUNNING" and not live:
        client.set_tag(parent.info.run_id, TAG_END_REASON, reason)
        client.set_terminated(parent.info.run_id, "KILLED")
        ended.append(parent.info.run_id)
    return ended


@dataclass
class Diagnosis:
    """What ``chemtune doctor`` prints for a study."""

    name: str
    driver: str
    optuna_states: dict[str, int] = field(default_factory=dict)
    mlflow_states: dict[str, int] = field(default_factory=dict)
    orphans: list[str] = field(default_factory=list)
    checkpoints: dict[str, str] = field(default_factory=dict)
    resume_plan: list[str] = field(default_factory=list)


def _trial_checkpoints(experiment_dir: Path) -> dict[str, str]:
    """Per Tune trial folder: its newest valid checkpoint and epoch, or why there is none."""
    out: dict[str, str] = {}
    if not experiment_dir.is_dir():
        return out
    for trial_dir in sorted(p for p in experiment_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        checkpoints = sorted(trial_dir.glob("checkpoint_*"), reverse=True)
        if not checkpoints:
            continue
        line = "no valid checkpoint"
        for folder in checkpoints:
            if checkpoint_problem(folder) is None:
                epoch = json.loads((folder / "metrics.json").read_text()).get("epoch", "?") \
                    if (folder / "metrics.json").is_file() else "?"
                line = f"{folder.name} (epoch {epoch})"
                break
        out[trial_dir.name] = line
    return out


def diagnose(paths: StudyPaths, name: str) -> Diagnosis:
    """Trials by state (Optuna and MLflow), orphaned runs, the last checkpoint per trial, the resume plan."""
    import optuna
    import yaml

    state = _state(paths, name)
    lease = state.get("driver")
    alive = driver_alive(lease)
    driver = (f"PID {lease['pid']} on {lease['host']}: " + ("running" if alive else "gone")) if lease else "unknown"
    diagnosis = Diagnosis(name=name, driver=driver)
    try:
        study = optuna.load_study(study_name=name, storage=state["optuna_url"])
        for trial in study.get_trials(deepcopy=False):
            diagnosis.optuna_states[trial.state.name] = diagnosis.optuna_states.get(trial.state.name, 0) + 1
    except KeyError:
        pass
    client = MlflowClient(state["tracking_uri"])
    parent = client.get_run(state["parent_run_id"])
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`{_PARENT}` = '{parent.info.run_id}'")
    for run in children:
        diagnosis.mlflow_states[run.info.status] = diagnosis.mlflow_states.get(run.info.status, 0) + 1
        if run.info.status == "RUNNING" and not alive and not _run_driver_alive(run):
            diagnosis.orphans.append(f"{run.info.run_id} (trial {run.data.tags.get(TAG_TRIAL)})")
    spec = yaml.safe_load(paths.study_file(name).read_text()) if paths.study_file(name).exists() else {}
    storage = (spec.get("tracking") or {}).get("storage_path") or paths.tune_storage
    diagnosis.checkpoints = _trial_checkpoints(Path(storage) / name)
    if alive:
        diagnosis.resume_plan.append("nothing: the driver is running (resume refuses until it ends)")
    else:
        if diagnosis.orphans or parent.info.status == "RUNNING":
            diagnosis.resume_plan.append(f"mark {len(diagnosis.orphans)} orphaned trial run(s) and the study run KILLED")
        failed = diagnosis.mlflow_states.get("FAILED", 0) + diagnosis.mlflow_states.get("KILLED", 0) + len(diagnosis.orphans)
        done = diagnosis.mlflow_states.get("FINISHED", 0)
        total = int(spec.get("num_trials", 0))
        if failed:
            diagnosis.resume_plan.append(f"re-run {failed} unfinished/errored trial(s) from their newest valid checkpoint")
        if total - done - failed > 0:
            diagnosis.resume_plan.append(f"start {total - done - failed} trial(s) not yet started")
        if not diagnosis.resume_plan:
            diagnosis.resume_plan.append(f"nothing to do: {done} of {total} trials finished")
    return diagnosis
