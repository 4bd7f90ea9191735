"""Several drivers on one study: ``chemtune launch STUDY --join --trials N`` (Optuna's distributed optimisation).

Each process is its own Ray Tune experiment that runs its share (``--trials N``) of ONE Optuna study
(same name, same RDB storage, ``load_if_exists``) and logs under ONE MLflow parent run. The Optuna
storage is the rendezvous: creating the study is atomic (its name is unique in the database), so
exactly one process creates the study and the MLflow parent run and records the run id as a study
user attribute; the others wait for it and attach. Each process registers itself as a *joiner*
(``chemtune.joiner.ID``: host, PID, start time, state); the last one to end closes the parent run.

Why a per-process share and not "run until Optuna holds ``num_trials``": that count cannot be claimed
atomically across processes (two asking at 19 of 20 both run), and a failed trial's retry would
count twice; a share is exact, and the total is the sum of the shares.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from mlflow.tracking import MlflowClient

from studies.health import TAG_DRIVER, TAG_END_REASON, driver_alive, driver_lease
from studies.store import PARENT_TAG
from trainables.errors import StudyError

__all__ = ["PARENT_ATTR", "JOINER_PREFIX", "Membership", "join_study", "leave_study"]

PARENT_ATTR = "chemtune.mlflow_parent_run_id"
JOINER_PREFIX = "chemtune.joiner."


@dataclass
class Membership:
    """This process's place in a joined study.

    Attributes:
        joiner_id: ``HOST-PID``: names this process's Tune experiment and tags its MLflow runs.
        slot: How many joiners came before (0: the creator); offsets the sampler's seed, so the
            processes do not all start with the same random points.
        creator: This process created the Optuna study and the MLflow parent run.
        parent_run_id: The study's MLflow parent run.
        last: Set when this process ended last (it closed the parent run).
    """

    joiner_id: str
    slot: int
    creator: bool
    parent_run_id: str
    study: Any = None
    last: bool = False

    @property
    def experiment(self) -> str:
        """This process's Ray Tune experiment (folder) name: its own, beside the other joiners'."""
        return f"join-{self.joiner_id}"


def _storage(url: str, attempts: int = 6) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage; several processes creating its tables at once collide, so retry that."""
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _joiner_id() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{socket.gethostname()}-{os.getpid()}")


def join_study(name: str, direction: str | list[str], optuna_url: str, create_parent: Callable[[], str],
               timeout: float = 120.0) -> Membership:
    """Create or attach to study ``name``: the Optuna study, then its MLflow parent run.

    Args:
        name: The study name (Optuna study and MLflow experiment).
        direction: ``min`` or ``max``; a list for a multi-objective study (``objectives:``).
        optuna_url: The shared Optuna RDB storage (PostgreSQL for processes on several machines).
        create_parent: Creates the MLflow parent run and returns its id (called by the creator only).
        timeout: Seconds a joiner waits for the creator to record the parent run.

    Raises:
        StudyError: The study exists but no parent run appears within ``timeout`` (it was launched
            without ``--join``, or its creator died before creating the run).
    """
    storage = _storage(optuna_url)
    try:
        directions = [direction] if isinstance(direction, str) else list(direction)
        study = optuna.create_study(study_name=name, storage=storage,
                                    directions=["minimize" if d == "min" else "maximize" for d in directions])
        creator = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        creator = False
    if creator:
        parent_run_id = create_parent()
        study.set_user_attr(PARENT_ATTR, parent_run_id)
    else:
        deadline = time.monotonic() + timeout
        while (parent_run_id := storage.get_study_user_attrs(study._study_id).get(PARENT_ATTR)) is None:
            if time.monotonic() > deadline:
                raise StudyError(
                    f"study {name!r} exists in the Optuna storage but has no MLflow parent run after {timeout:.0f} s: "
                    "it was launched without --join (join only studies launched with --join), or the process that "
                    "created it died first (launch it again with --restart, without --join)")
            time.sleep(1)
    joiners = [k for k in storage.get_study_user_attrs(study._study_id) if k.startswith(JOINER_PREFIX)]
    member = Membership(_joiner_id(), 0 if creator else max(1, len(joiners)), creator, parent_run_id, study)
    _set_state(member, "running")
    return member


def _set_state(member: Membership, state: str) -> None:
    member.study.set_user_attr(JOINER_PREFIX + member.joiner_id, {**driver_lease(), "state": state})


def _others_running(member: Membership) -> bool:
    """Whether another joiner may still run trials: it said it runs and is alive (or on another host, unknowable)."""
    attrs = member.study._storage.get_study_user_attrs(member.study._study_id)
    for key, value in attrs.items():
        if not key.startswith(JOINER_PREFIX) or key == JOINER_PREFIX + member.joiner_id:
            continue
        if isinstance(value, dict) and value.get("state") == "running":
            if value.get("host") != socket.gethostname() or driver_alive(value):
                return True
    return False


def leave_study(member: Membership, client: MlflowClient, status: str) -> bool:
    """End this process's part: its runs left RUNNING become KILLED; the last joiner also ends the
    runs of joiners that died on this host (reason tagged) and the parent run. Returns whether it was last."""
    _set_state(member, "done")
    experiment_id = client.get_run(member.parent_run_id).info.experiment_id
    running = client.search_runs(
        [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{member.parent_run_id}' and attributes.status = 'RUNNING'")
    for run in running:
        if run.data.tags.get("chemtune.joiner") == member.joiner_id:
            client.set_terminated(run.info.run_id, "KILLED")
    member.last = not _others_running(member)
    if not member.last:
        return False
    for run in running:
        lease = run.data.tags.get(TAG_DRIVER)
        if run.data.tags.get("chemtune.joiner") == member.joiner_id or (lease and driver_alive(json.loads(lease))):
            continue
        client.set_tag(run.info.run_id, TAG_END_REASON, "orphaned: its joined driver is gone; marked KILLED by the "
                       f"last joiner ({member.joiner_id}) of the study")
        client.set_terminated(run.info.run_id, "KILLED")
    client.set_terminated(member.parent_run_id, status)
    return True
