"""Trainables: task plug-ins (data preparation + a plain training core) that Ray Tune schedules.

Importing the package is cheap: the registries declare the built-in plug-ins, and each plug-in's
module (torch, transformers, peft) is imported on its first ``get`` (``trainables.registry``).
"""

from trainables.base import TASKS, NullReporter, Prepared, Reporter, Task

__all__ = ["TASKS", "Task", "Prepared", "Reporter", "NullReporter"]
