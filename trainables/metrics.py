"""Metric semantics in one place: a reported name -> its split, its task metric and its direction.

A task reports ``valid_<m>`` every epoch and ``test_<m>`` at the end, for each ``m`` in
``Task.metrics`` (plus ``test_<m>`` for ``Task.test_metrics``); ``m`` in ``Task.maximize`` means
larger is better. Metric names may hold underscores themselves (``valid_token_acc``), so a name
splits on its *first* underscore only.
The study spec, the leaderboard and ``register`` all read directions from here.

Costs (:data:`COSTS`) are what a trial spends rather than how well it does; every trial reports them, and a
multi-objective study (``objectives:``) trades them against its metric. All are minimised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from trainables.errors import StudyError

if TYPE_CHECKING:
    from trainables.base import Task

__all__ = ["SPLITS", "COSTS", "Metric", "parse_metric", "parse_objective", "direction", "task_metrics"]

SPLITS: tuple[str, ...] = ("valid", "test")
Direction = Literal["min", "max"]

COSTS: dict[str, str] = {
    "trainable_params": "parameters the optimiser updates (a LoRA adapter's, not the frozen backbone's)",
    "device_seconds": "trial wall seconds (training and evaluation) x the devices it holds: GPU-seconds on "
                      "GPUs, worker-seconds on CPU",
    "peak_memory_mb": "peak accelerator memory the trial allocated (torch), in MiB; 0 on CPU, where process "
                      "RSS would count the interpreter and other trials' shared pages, not the model",
    "predict_ms_per_1k": "milliseconds to predict (and score) 1,000 valid molecules on the trial's device",
}
"""Costs every trial reports (name -> what it measures); all are minimised."""


@dataclass(frozen=True)
class Metric:
    """A reported metric: ``valid_token_acc`` -> split ``valid``, base ``token_acc``, direction ``max``."""

    name: str
    split: str
    base: str
    direction: Direction

    def on(self, split: str) -> "Metric":
        """The same metric on another split (``valid_rmse`` -> ``test_rmse``)."""
        return Metric(f"{split}_{self.base}", split, self.base, self.direction)


def _task(task: "str | Task") -> "Task":
    if isinstance(task, str):
        from trainables.base import TASKS

        return TASKS.get(task)
    return task


def parse_metric(name: str, task: "str | Task", splits: tuple[str, ...] = SPLITS) -> Metric:
    """Read ``name`` for ``task``; raise :class:`StudyError` naming the metrics the task reports."""
    t = _task(task)
    split, _, base = name.partition("_")
    if split not in splits or base not in _reported(t, split):
        allowed = ", ".join(f"{s}_{m}" for s in splits for m in _reported(t, s))
        raise StudyError(f"metric {name!r} is not one the task reports; choose {allowed}")
    return Metric(name, split, base, "max" if base in t.maximize else "min")


def parse_objective(name: str, task: "str | Task") -> Metric:
    """An objective of a study: a ``valid_*`` metric of ``task`` or one of :data:`COSTS` (split ``cost``, min)."""
    if name in COSTS:
        return Metric(name, "cost", name, "min")
    try:
        return parse_metric(name, task, splits=("valid",))
    except StudyError:
        raise StudyError(f"objective {name!r} is neither a valid_* metric of the task nor a cost; costs: "
                         f"{', '.join(COSTS)}") from None


def _reported(task: "Task", split: str) -> tuple[str, ...]:
    return task.metrics + (task.test_metrics if split == "test" else ())


def direction(name: str, task: "str | Task") -> Direction:
    """``"max"`` if larger ``name`` is better for ``task``, else ``"min"``."""
    return parse_metric(name, task).direction


def task_metrics(task: "str | Task") -> list[Metric]:
    """Every metric ``task`` reports, on every split."""
    t = _task(task)
    return [parse_metric(f"{s}_{m}", t) for s in SPLITS for m in _reported(t, s)]
