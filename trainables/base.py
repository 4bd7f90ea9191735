"""The fixed shape of a task plug-in, and how a trial reports (to Ray Tune, or to nobody)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from trainables.data.report import DataReport
from trainables.io import atomic_dir
from trainables.registry import Registry

if TYPE_CHECKING:
    from studies.spec import StudySpec

__all__ = ["TASKS", "Task", "Prepared", "Reporter", "NullReporter", "TuneReporter"]


@dataclass
class Prepared:
    """What ``Task.prepare`` hands every trial (through Ray's object store).

    Attributes:
        payload: The task's data (splits, tokenizer inputs, ...).
        reports: One :class:`DataReport` per source read; logged as ``data_report.json``.
        tags: Logged on the study run and every trial run (e.g. split hashes).
        summary: Sizes and other numbers logged as study parameters.
    """

    payload: Any
    reports: list[DataReport]
    tags: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


class Reporter(Protocol):
    """Where a trial sends per-epoch metrics and checkpoints, and finds one to resume from."""

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: Path | None = None) -> None: ...

    def resume_dir(self) -> Path | None: ...


class NullReporter:
    """The do-nothing twin of :class:`TuneReporter`: keeps the history, and the last checkpoint if asked.

    Args:
        keep_dir: Copy each reported checkpoint here (atomically); ``None`` discards them.
        resume_from: A checkpoint directory to resume from.
    """

    def __init__(self, keep_dir: Path | None = None, resume_from: Path | None = None) -> None:
        self.history: list[dict[str, Any]] = []
        self.keep_dir = keep_dir
        self._resume = resume_from

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: Path | None = None) -> None:
        self.history.append(dict(metrics))
        if checkpoint_dir is not None and self.keep_dir is not None:
            with atomic_dir(self.keep_dir) as tmp:
                shutil.copytree(checkpoint_dir, tmp, dirs_exist_ok=True)

    def resume_dir(self) -> Path | None:
        return self._resume


class TuneReporter:
    """Reports to the running Ray Tune trial; checkpoints are persisted by Tune's storage.

    A trial with several Ray Train workers reports through ``cluster.distributed.TrainReporter``.
    """

    def __init__(self) -> None:
        self._restored: Path | None = None

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: Path | None = None) -> None:
        from ray import tune

        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(dict(metrics), checkpoint=checkpoint)

    def resume_dir(self) -> Path | None:
        from ray import tune

        if self._restored is None:
            checkpoint = tune.get_checkpoint()
            self._restored = Path(checkpoint.to_directory()) if checkpoint else None
        return self._restored


@dataclass(frozen=True)
class Task:
    """A registered task.

    Attributes:
        data_kind: The dataset kind it reads (``"molecules"`` or ``"reactions"``).
        metrics: Metric names it reports as ``valid_<m>`` every epoch (and ``test_<m>`` at the end).
        maximize: The subset of ``metrics`` where larger is better.
        prepare: ``StudySpec -> Prepared``; runs once before any trial and raises on bad data.
        train: ``(config, payload, spec, reporter) -> final metrics``; the plain function core.
        validate: ``StudySpec -> None``; raises ``ValueError`` for bad task options.
        pyfunc: The ``mlflow.pyfunc.PythonModel`` class that serves a checkpoint's ``model/`` folder.
        pip_requirements: What that MLflow model needs installed.
    """

    data_kind: str
    metrics: tuple[str, ...]
    maximize: frozenset[str]
    prepare: Callable[["StudySpec"], Prepared]
    train: Callable[[dict[str, Any], Any, "StudySpec", Reporter], dict[str, float]]
    validate: Callable[["StudySpec"], None] = lambda spec: None
    pyfunc: Callable[[], Any] | None = None
    pip_requirements: tuple[str, ...] = ("chemtune", "torch", "transformers", "rdkit", "pandas")


TASKS: Registry[Task] = Registry("task")
