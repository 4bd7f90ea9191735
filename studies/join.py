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

A study's stages (``model.pretrain``, ``options.teacher_study``) are built once for all joiners
(:func:`build_once`): the first process to claim a stage in the shared Optuna storage builds it, the others
wait and fetch its checkpoint from the shared MLflow store.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from mlflow.tracking import MlflowClient

from studies.health import TAG_DRIVER, TAG_END_REASON, driver_alive, driver_lease
from studies.store import PARENT_TAG
from trainables.errors import StudyError

__all__ = ["PARENT_ATTR", "JOINER_PREFIX", "STAGE_PREFIX", "Membership", "join_study", "leave_study", "build_once"]

PARENT_ATTR = "chemtune.mlflow_parent_run_id"
JOINER_PREFIX = "chemtune.joiner."
STAGE_PREFIX = "chemtune.stage."  # Optuna "studies" that are build claims: chemtune.stage.<name>.<attempt>


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


def build_once(optuna_url: str, name: str, build: Callable[[], dict[str, Any]],
               fetch: Callable[[dict[str, Any]], None], *, poll: float = 2.0, beat: float = 30.0,
               stale: float = 300.0) -> None:
    """Run ``build`` in exactly one of the processes that share ``optuna_url``; the others ``fetch`` what it shared.

    The claim is an Optuna study named ``chemtune.stage.<name>.<attempt>``: creating it is atomic in the
    database, so one process wins and records itself (its driver lease, then a heartbeat every ``beat`` s),
    builds, and records ``ready`` with ``build()``'s result, or ``failed`` with the error. A waiter fetches on
    ``ready``; a failure recorded while it waited is raised (every joiner stops, with the builder's error); a
    failure recorded before it started (an earlier launch), or a builder gone (dead on this host, or no
    heartbeat for ``stale`` s from another) moves on to the next attempt, which one process claims again.
    """
    storage = _storage(optuna_url)
    since, attempt = time.time(), 0
    while True:
        claim = f"{STAGE_PREFIX}{name}.{attempt}"
        try:
            study = optuna.create_study(study_name=claim, storage=storage)
        except optuna.exceptions.DuplicatedStudyError:
            study = None
        if study is not None:
            print(f"stage {name}: building it for every joined process (the others wait for it)", file=sys.stderr)
            _build_claimed(study, build, beat)
            return
        info = _wait_claim(storage, storage.get_study_id_from_name(claim), name, since, poll, stale)
        if info is not None:
            fetch(info)
            print(f"stage {name}: fetched the checkpoint another joined process built", file=sys.stderr)
            return
        attempt += 1


def _build_claimed(study: optuna.Study, build: Callable[[], dict[str, Any]], beat: float) -> None:
    study.set_user_attr("builder", {**driver_lease(), "beat": time.time()})
    stop = threading.Event()

    def heartbeat() -> None:  # waiters on other hosts cannot see this process: they see it beat
        while not stop.wait(beat):
            try:
                study.set_user_attr("builder", {**driver_lease(), "beat": time.time()})
            except Exception:  # noqa: BLE001 - a database hiccup: the next beat is in time (stale >> beat)
                continue

    thread = threading.Thread(target=heartbeat, name="chemtune-stage-heartbeat", daemon=True)
    thread.start()
    try:
        shared = build()
    except BaseException as err:
        message = str(err).splitlines()[0][:500] if str(err) else type(err).__name__
        study.set_user_attr("failed", {"error": message, "at": time.time(), "host": socket.gethostname()})
        raise
    finally:
        stop.set()
        thread.join()
    study.set_user_attr("ready", shared)


def _wait_claim(storage: optuna.storages.RDBStorage, study_id: int, name: str, since: float, poll: float,
                stale: float) -> dict[str, Any] | None:
    """The claim's shared result once ready; ``None`` when the next attempt should be claimed."""
    seen, said = time.monotonic(), False
    while True:
        attrs = storage.get_study_user_attrs(study_id)
        if "ready" in attrs:
            return attrs["ready"]
        failed = attrs.get("failed")
        if failed:
            if failed["at"] < since:  # an earlier launch's failure: build again
                return None
            raise StudyError(f"stage {name}: its build failed in another joined process (on {failed['host']}): "
                             f"{failed['error']}; fix that and launch the joined processes again")
        builder = attrs.get("builder")
        if builder is not None and not said:
            print(f"stage {name}: another joined process builds it (on {builder.get('host')}, pid "
                  f"{builder.get('pid')}); waiting for it", file=sys.stderr)
            said = True
        if builder is None:  # claimed a moment ago; a claimer that died before recording itself is stale too
            if time.monotonic() - seen > stale:
                return None
        elif builder.get("host") == socket.gethostname():
            if not driver_alive(builder):
                return None
        elif time.time() - float(builder["beat"]) > stale:
            return None
        time.sleep(poll)
