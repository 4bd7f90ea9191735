"""A terminal line per finished trial with the best value so far."""

from __future__ import annotations

from typing import Any

from ray import tune
from rich.console import Console

__all__ = ["ProgressCallback"]


class ProgressCallback(tune.Callback):
    """Prints trial starts, ends and the best ``metric`` so far."""

    def __init__(self, metric: str, mode: str, total: int) -> None:
        self.metric, self.mode, self.total = metric, mode, total
        self.best: float | None = None
        self.done = 0

    def _console(self) -> Console:
        return Console(stderr=True, highlight=False, soft_wrap=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.config.items())
        self._console().print(f"[cyan]trial {trial.trial_id} started[/] {params}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "finished")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "[red]failed[/]")

    def _finish(self, trial: Any, how: str) -> None:
        self.done += 1
        value = (trial.last_result or {}).get(self.metric)
        if value is not None and (self.best is None or (value < self.best if self.mode == "min" else value > self.best)):
            self.best = value
        shown = "n/a" if value is None else f"{value:.4f}"
        best = "n/a" if self.best is None else f"{self.best:.4f}"
        epochs = (trial.last_result or {}).get("epoch", 0)
        self._console().print(
            f"trial {trial.trial_id} {how} after {epochs} epoch(s): {self.metric}={shown} | "
            f"best so far {best} | {self.done}/{self.total} done"
        )
