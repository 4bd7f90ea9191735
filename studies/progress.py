"""What the terminal shows while a study runs: the data summary, a live view of the trials, quiet logs.

On a terminal a rich live table (running trials with their epoch and metric, done/pruned/failed,
best so far, ETA); elsewhere (CI, a job log) one line per epoch and per finished trial.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

from ray import tune
from rich.console import Console
from rich.live import Live
from rich.table import Table

from studies.trials import optuna_trial, ran_out, stopped_early, trial_name

__all__ = ["ProgressCallback", "print_data_summary", "quiet"]


def _console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_data_summary(prepared: Any, console: Console | None = None) -> None:
    """The data report's counts (rows kept/excluded per reason) and split sizes, before any trial."""
    console = console or _console()
    for report in prepared.reports:
        console.print(report.summary())
    console.print("splits: " + ", ".join(f"{k}={v}" for k, v in prepared.summary.items()))


class _Once(logging.Filter):
    """Lets each distinct message through once per process (Ray and MLflow repeat them per trial)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        decided = getattr(record, "_chemtune_once", None)
        if decided is not None:  # the same record at its logger, then at a handler
            return decided
        key = f"{record.name}:{record.levelno}:{record.getMessage()}"
        record._chemtune_once = key not in self.seen
        self.seen.add(key)
        return record._chemtune_once


_ONCE = _Once()
# Messages about Ray's and MLflow's own internals that a chemtune user cannot act on.
_SILENCED = [
    r".*Received additional (result|completion) for trial.*",
    r".*is deprecated.*",
    r".*Setting the `?metric`? and `?mode`?.*",
    r".*Model logged without a signature.*",
    r".*Add type hints to the `predict` method.*",
    r".*An input example was not provided.*",
    r".*git.*executable.*",
    # chemtune's Optuna heartbeat (studies/optuna_heartbeat.py) uses these on purpose; nothing to act on
    r".*is experimental \(supported from v.*",
    r".*is an experimental feature.*",
    r".*Heartbeat of storage is supposed to be used with Study\.optimize.*",
]


def quiet() -> None:
    """Silence what a user cannot act on; show every other warning once."""
    warnings.simplefilter("once")
    for pattern in _SILENCED:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("mlflow", "alembic", "ray.tune.search", "optuna"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in ("", "ray", "ray.tune", "mlflow"):
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if _ONCE not in handler.filters:
                handler.addFilter(_ONCE)
        if _ONCE not in logger.filters:
            logger.addFilter(_ONCE)


def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class ProgressCallback(tune.Callback):
    """The study's live progress: per running trial its epoch and ``metric``; counts; best; ETA.

    Args:
        metric: The study's metric; mode: ``min`` or ``max``; total: the number of trials;
        max_epochs: epochs per trial (for the ETA and to tell an ASHA stop); live: draw a live table
        (default: when stderr is a terminal).
    """

    def __init__(self, metric: str, mode: str, total: int, max_epochs: int = 1, live: bool | None = None) -> None:
        self.metric, self.mode, self.total, self.max_epochs = metric, mode, total, max_epochs
        self.live_mode = live
        self.best: float | None = None
        self.best_name = ""
        self.counts = {"done": 0, "pruned": 0, "failed": 0}
        self.running: dict[str, dict[str, Any]] = {}
        self.epoch_seconds: list[float] = []
        self.epochs_done = 0
        self.started = time.monotonic()
        self._live: Live | None = None
        self._console_obj: Console | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_live": None, "_console_obj": None}

    @property
    def console(self) -> Console:
        if self._console_obj is None:
            self._console_obj = _console()
        return self._console_obj

    # -- what is shown ----------------------------------------------------------------------------
    def eta_seconds(self) -> float | None:
        """Remaining epochs (unstarted trials at full length, running ones' rest) x the mean epoch
        time, over the trials running at once. ASHA stops some early, so this is an upper bound."""
        if not self.epoch_seconds:
            return None
        finished = sum(self.counts.values())
        unstarted = max(0, self.total - finished - len(self.running))
        remaining = unstarted * self.max_epochs + sum(self.max_epochs - t["epoch"] for t in self.running.values())
        per_epoch = sum(self.epoch_seconds) / len(self.epoch_seconds)
        return remaining * per_epoch / max(1, len(self.running))

    def status_line(self) -> str:
        best = "n/a" if self.best is None else f"{self.best:.4f} ({self.best_name})"
        c = self.counts
        return (f"{c['done']} done, {c['pruned']} pruned, {c['failed']} failed, {len(self.running)} running "
                f"of {self.total} | best {self.metric} {best} | ETA {_eta(self.eta_seconds())}")

    def table(self) -> Table:
        table = Table(title="chemtune study", caption=self.status_line(), expand=False)
        for column in ("trial", "epoch", self.metric):
            table.add_column(column)
        for info in self.running.values():
            table.add_row(info["name"], f"{info['epoch']}/{self.max_epochs}", _fmt(info["value"]))
        return table

    def _is_live(self) -> bool:
        return self.console.is_terminal if self.live_mode is None else self.live_mode

    def _refresh(self) -> None:
        if self._is_live():
            if self._live is None:
                self._live = Live(self.table(), console=self.console, refresh_per_second=2, transient=True)
                self._live.start()
            self._live.update(self.table())

    def _print(self, text: str) -> None:
        self.console.print(text)  # above the live table when there is one

    # -- Tune's hooks -----------------------------------------------------------------------------
    def _name(self, trial: Any) -> str:
        ot = optuna_trial(trial.trial_id)
        return trial_name(None if ot is None else ot.number, trial.config)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        name = self._name(trial)
        self.running[trial.trial_id] = {"name": name, "epoch": 0, "value": None, "tic": time.monotonic()}
        self._print(f"[cyan]{name} started[/]")
        self._refresh()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        info_ = self.running.setdefault(trial.trial_id, {"name": self._name(trial), "epoch": 0, "value": None,
                                                         "tic": time.monotonic()})
        seconds = result.get("time_this_iter_s")
        self.epoch_seconds.append(float(seconds) if seconds else time.monotonic() - info_["tic"])
        info_.update(epoch=int(result.get("epoch", info_["epoch"] + 1)), value=result.get(self.metric),
                     tic=time.monotonic())
        if self._is_live():
            self._refresh()
        else:
            self._print(f"{info_['name']} epoch {info_['epoch']}/{self.max_epochs} {self.metric}="
                        f"{_fmt(info_['value'])} | {self.status_line()}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        pruned = stopped_early(result, self.max_epochs)
        self._finish(trial, "pruned" if pruned else "done",
                     "[yellow]pruned by ASHA[/]" if pruned else "[green]finished[/]")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "failed", "[red]failed[/]")

    def _finish(self, trial: Any, state: str, how: str) -> None:
        info_ = self.running.pop(trial.trial_id, None) or {"name": self._name(trial)}
        self.counts[state] += 1
        result = trial.last_result or {}
        value = result.get(self.metric)
        if state == "done" and isinstance(value, (int, float)) and (
                self.best is None or (value < self.best if self.mode == "min" else value > self.best)):
            self.best, self.best_name = float(value), info_["name"]
        self._print(f"{info_['name']} {how} after {int(result.get('epoch', 0))} epoch(s): "
                    f"{self.metric}={_fmt(value) or 'n/a'} | {self.status_line()}")
        self._refresh()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        cut = not all(ran_out(t.last_result, t.status == "ERROR") for t in trials)  # a Ctrl-C stopped it
        how = "study stopped (resume with `chemtune resume`) after" if cut else "study done in"
        self._print(f"{how} {_eta(time.monotonic() - self.started)}: {self.status_line()}")
