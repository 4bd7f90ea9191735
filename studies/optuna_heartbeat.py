"""Optuna trials whose driver vanished are failed by their stale heartbeat, and their parameters retried.

Ray Tune's ``OptunaSearch`` asks and tells through Optuna's ask/tell interface, which records no
heartbeat (only ``Study.optimize`` does). A driver that is SIGKILLed between asking a trial and Tune's
next experiment checkpoint leaves that Optuna trial RUNNING forever. Here the driver's searcher beats
for every trial it holds (a daemon thread: it beats exactly as long as the driver lives) and, when a
driver starts (``launch``/``resume``), it first beats for the trials it restored and then runs
``optuna.storages.fail_stale_trials``: trials nobody beat for within ``grace_period`` become FAIL, and
``RetryHeartbeatStaleTrialCallback`` enqueues their parameters, which the next ``ask`` takes.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.storages._heartbeat import is_heartbeat_enabled  # not re-exported by optuna.storages

from studies.store import sqlite_init_lock
from studies.trials import ChemtuneOptunaSearch

__all__ = ["HEARTBEAT_INTERVAL_S", "GRACE_PERIOD_S", "heartbeat_storage", "HeartbeatOptunaSearch", "stop_heartbeats",
           "driver_gone"]

HEARTBEAT_INTERVAL_S, GRACE_PERIOD_S = 10, 60
_RUNTIME = ("_beat_thread", "_beat_stop", "_beat_started", "_beat_owner")
_BEATING: "weakref.WeakSet[HeartbeatOptunaSearch]" = weakref.WeakSet()


_DRIVER_GONE: set[str] = set()  # studies whose previous (only) driver this process knows to be dead


def driver_gone(study_name: str) -> None:
    """``resume`` found the study's driver dead (``studies.health.reconcile``): its searcher fails, at its first
    ``suggest``, every RUNNING Optuna trial no restored Tune trial holds, without waiting out the grace period.

    Waiting was a race: the resumed driver asked fresh trials first, and when the orphan went stale a minute
    later its retry stayed WAITING after the study already had its trials (the fault suite's repeated kills).
    Never for a joined study: its other drivers' trials are alive.
    """
    _DRIVER_GONE.add(study_name)


def stop_heartbeats(owner: int | None = None) -> int:
    """End the heartbeat threads that ``tuner.fit()`` on thread ``owner`` (default: this one) started.

    A study's searcher beats while its study runs; the process may live on (a notebook, the Python API,
    the test suite running many studies) and a thread left beating would keep querying a storage that
    may be gone. Tune asks the searcher on the thread that called ``fit``, so that thread owns it; other
    studies running on other threads of the process keep theirs. Returns how many were stopped.
    """
    owner = threading.get_ident() if owner is None else owner
    stopped = 0
    for searcher in list(_BEATING):
        if getattr(searcher, "_beat_owner", None) == owner:
            searcher.stop_beating()
            stopped += 1
    return stopped


logger = logging.getLogger(__name__)


def heartbeat_storage(url: str, max_retry: int, interval: int = HEARTBEAT_INTERVAL_S,
                      grace: int = GRACE_PERIOD_S) -> RDBStorage:
    """An RDB storage whose stale trials fail after ``grace`` s and are retried at most ``max_retry`` times."""
    try:  # optuna >= 4.9 names it after what it does
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        retry = {"heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=max_retry)}
    except ImportError:
        from optuna.storages import RetryFailedTrialCallback

        retry = {"failed_trial_callback": RetryFailedTrialCallback(max_retry=max_retry)}
    with sqlite_init_lock(url):  # two drivers at once on a fresh embedded store: one creates the tables
        return RDBStorage(url, heartbeat_interval=interval, grace_period=grace, **retry)


class HeartbeatOptunaSearch(ChemtuneOptunaSearch):
    """The study's Optuna searcher that also keeps its trials' Optuna heartbeats and fails other drivers' stale ones."""

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not getattr(self, "_beat_started", False):
            self._start_beating()
        config = super().suggest(trial_id)
        if trial_id in self._ot_trials:
            self._beat_one(self._ot_trials[trial_id])
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        # A driver killed after telling Optuna a trial ended, but before Tune's experiment checkpoint said
        # so, resumes that trial: its Optuna trial is finished and must not be reported to (it would raise
        # UpdateFinishedTrialError and end the resumed study).
        if self._finished_in_optuna(trial_id):
            return
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if self._finished_in_optuna(trial_id):
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)

    def _finished_in_optuna(self, trial_id: str) -> bool:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return False
        return self._rdb().get_trial(ot_trial._trial_id).state.is_finished()

    # -- heartbeats -------------------------------------------------------------------------------
    def _rdb(self) -> Any:
        return self._ot_study._storage

    def _beat_one(self, ot_trial: Any) -> None:
        try:
            self._rdb().record_heartbeat(ot_trial._trial_id)
        except Exception as err:  # noqa: BLE001 - a missed beat is retried next interval
            logger.warning("Optuna heartbeat failed: %s", err)

    def _beat_all(self) -> None:
        for tune_id, ot_trial in list(self._ot_trials.items()):
            if tune_id not in self._completed_trials:
                self._beat_one(ot_trial)

    def _start_beating(self) -> None:
        self._beat_started = True
        storage = self._rdb()
        if not is_heartbeat_enabled(storage):
            return
        self._beat_all()  # trials restored from the experiment checkpoint are alive again
        if self._study_name in _DRIVER_GONE:
            _DRIVER_GONE.discard(self._study_name)
            self._fail_orphans(storage)
        optuna.storages.fail_stale_trials(self._ot_study)
        self._beat_stop = threading.Event()

        interval = storage.get_heartbeat_interval() or HEARTBEAT_INTERVAL_S

        def loop() -> None:  # also fails trials that go stale later (a driver killed while this one runs)
            while not self._beat_stop.wait(interval):
                self._beat_all()
                try:
                    optuna.storages.fail_stale_trials(self._ot_study)
                except Exception as err:  # noqa: BLE001 - tried again next interval
                    logger.warning("failing stale Optuna trials: %s", err)

        self._beat_thread = threading.Thread(target=loop, name="optuna-heartbeat", daemon=True)
        self._beat_owner = threading.get_ident()
        _BEATING.add(self)
        self._beat_thread.start()

    def _fail_orphans(self, storage: Any) -> None:
        """FAIL (and retry, by the storage's stale-trial callback) the RUNNING trials this searcher does not hold."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        held = {t._trial_id for t in self._ot_trials.values()}
        failed = []
        for trial in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial._trial_id in held:
                continue
            try:
                if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                    failed.append(trial._trial_id)
            except UpdateFinishedTrialError:  # another process got there first
                pass
        retry = (getattr(storage, "get_heartbeat_stale_trial_callback", None) or storage.get_failed_trial_callback)()
        for trial_id in failed if retry is not None else ():
            retry(self._ot_study, storage.get_trial(trial_id))
        if failed:
            logger.warning("failed %d Optuna trial(s) of the dead driver; retrying their parameters", len(failed))

    def stop_beating(self) -> None:
        """The study is over (or this driver leaves it): no more beats, no more stale-trial checks."""
        stop, thread = getattr(self, "_beat_stop", None), getattr(self, "_beat_thread", None)
        if stop is not None:
            stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        _BEATING.discard(self)

    # -- pickling (Tune saves the searcher with the experiment) ---------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _RUNTIME}

    def save(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)
