"""Trainables: task plug-ins (data preparation + a plain training core) that Ray Tune schedules."""

from trainables.base import TASKS, NullReporter, Prepared, Reporter, Task, TuneReporter
from trainables import property as _property  # noqa: F401  (registers the "property" task)

__all__ = ["TASKS", "Task", "Prepared", "Reporter", "NullReporter", "TuneReporter"]
