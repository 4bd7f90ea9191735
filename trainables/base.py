"""The fixed shape of a task plug-in, and how a trial reports (to Ray Tune, or to nobody)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from trainables.checkpoints import checkpoint_problem, newest_valid
from trainables.data.report import DataReport
from trainables.io import atomic_dir
from trainables.registry import Registry

__all__ = ["TASKS", "Task", "Prepared", "Reporter", "NullReporter", "restore_training_state", "resumable_folder"]

logger = logging.getLogger(__name__)


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
    """The do-nothing twin of the Ray reporters (``studies.tune_adapter``): keeps the history, and the last checkpoint if asked.

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


def resumable_folder(checkpoint: Any) -> Path | None:
    """The newest valid checkpoint at or before Ray's ``checkpoint`` (``None``: start over).

    On a local or shared filesystem the trial's older ``checkpoint_NNNNNN`` siblings are the fallback
    when the newest one is missing or was not completely written; each skipped one is logged.
    """
    if checkpoint is None:
        return None
    from pyarrow.fs import LocalFileSystem

    if isinstance(checkpoint.filesystem, LocalFileSystem):
        path = Path(checkpoint.path)
        folder, skipped = newest_valid(path, path.parent.glob("checkpoint_*"))
    else:
        try:
            folder, skipped = newest_valid(Path(checkpoint.to_directory()))
        except (FileNotFoundError, OSError) as err:
            folder, skipped = None, [f"{checkpoint.path}: {err}"]
    for problem in skipped:
        logger.warning("skipping checkpoint: %s", problem)
    if folder is None and skipped:
        logger.warning("no valid checkpoint left; the trial starts over")
    return folder


def restore_training_state(reporter: Reporter, accelerator: Any, model: Any, optimizer: Any, scheduler: Any
                           ) -> dict[str, Any]:
    """Load the reporter's ``state.pt`` (if the trial resumes) into model, optimizer and scheduler.

    Returns:
        The whole saved state (``epoch`` and whatever else the task saved), or ``{}`` for a fresh trial.
    """
    resume = reporter.resume_dir()
    if resume is None:
        return {}
    problem = checkpoint_problem(resume)
    if problem is not None:
        raise RuntimeError(f"cannot resume: {problem}")
    import torch

    state = torch.load(resume / "state.pt", map_location="cpu", weights_only=False)
    accelerator.unwrap_model(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state


@dataclass(frozen=True)
class Task:
    """A registered task.

    Attributes:
        data_kind: The dataset kind it reads (``"molecules"``, ``"reactions"`` or ``"corpus"``).
        metrics: Metric names it reports as ``valid_<m>`` every epoch (and ``test_<m>`` at the end).
        maximize: The metrics (of ``metrics`` and ``test_metrics``) where larger is better.
        prepare: ``StudySchema -> Prepared``; runs once before any trial and raises on bad data.
        train: ``(config, payload, trial_spec, reporter) -> final metrics``; the plain function core.
        validate: ``StudySchema -> None``; raises ``ValueError`` for bad task options.

    The study arguments are :class:`trainables.spec.StudySchema` and ``TrialSpec``, typed ``Any`` here: the
    schema imports this module (it checks ``task:`` against ``TASKS``), and this module does not import it back.
        pyfunc: The ``mlflow.pyfunc.PythonModel`` class that serves a checkpoint's ``model/`` folder.
        pip_requirements: What that MLflow model needs installed.
        test_metrics: Metrics it reports on test only, as ``test_<m>`` (e.g. beam-search top-5).
    """

    data_kind: str
    metrics: tuple[str, ...]
    maximize: frozenset[str]
    prepare: Callable[[Any], Prepared]
    train: Callable[[dict[str, Any], Any, Any, Reporter], dict[str, float]]
    validate: Callable[[Any], None] = lambda spec: None
    pyfunc: Callable[[], Any] | None = None
    pip_requirements: tuple[str, ...] = ("chemtune", "torch", "transformers", "rdkit", "pandas")
    test_metrics: tuple[str, ...] = ()


TASKS: Registry[Task] = Registry("task")
# The built-in tasks, imported on first use (trainables.registry); each module registers its task.
TASKS.register_lazy("property", "trainables.property.task",
                    help="molecular property regression (encoder + regression head)")
TASKS.register_lazy("retro", "trainables.retro.task",
                    help="retrosynthesis: seq2seq product -> reactants, beam-search top-k (treatments, LoRA, adapters, gamma)")
TASKS.register_lazy("pretrain", "trainables.pretrain.task",
                    help="pretraining: masked-language modelling (encoders) or denoising (seq2seq) on a SMILES corpus")
