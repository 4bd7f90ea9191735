"""Trainables: task plug-ins (data preparation + a plain training core) that Ray Tune schedules."""

from trainables.base import TASKS, NullReporter, Prepared, Reporter, Task
from trainables import property as _property  # noqa: F401  (registers the "property" task)
from trainables import selection as _selection  # noqa: F401  (registers influence, curriculum, active)
from trainables import retro as _retro  # noqa: F401  (registers the "retro" task, its datasets and models)

__all__ = ["TASKS", "Task", "Prepared", "Reporter", "NullReporter"]
