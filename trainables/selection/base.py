"""Training-set selection for property trials: which rows each epoch trains on.

A selector sees the candidate rows (train rows first, then pool rows) and returns, for every
epoch, the indices to train on. ``none`` is the do-nothing twin: all train rows, every epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from trainables.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from trainables.base import Reporter
    from trainables.data.tables import MoleculeTable
    from trainables.spec import StudySchema

__all__ = [
    "SELECTORS", "Selector", "SelectionContext", "AllTrainRows", "check_selection", "selection_names",
    "selection_summary",
]


@dataclass(frozen=True)
class SelectionContext:
    """What a selector sees of its trial: data, sizes and a few callables; never the trainer itself.

    Like an Optuna sampler sees ``study`` and ``trial``: a selector can neither rebuild the trial's
    optimizer nor reach its loaders, so the epoch loop stays the one place that trains.

    Attributes:
        candidates: Train rows first, then pool rows; selectors return indices into this.
        n_train: How many of the candidates are train rows.
        ids: Encoded token ids: ``candidates``, ``valid``, ``test``.
        valid: The validation molecules (targets in label units).
        pad_id: The tokenizer's padding id.
        max_epochs: Epochs of the trial.
        seed: The study's seed.
        device: Where the trial's model lives (inputs go there; :mod:`trainables.batching` places them).
        config: The trial's hyperparameters (read-only).
        options: The study's task options (e.g. ``base_model_uri``).
        model: The trial's current model (unwrapped ``RegressionModel``), for MC dropout or subsets.
        predict: ``ids -> predictions`` (label units, dropout off) of the current model.
        embed: ``ids -> [N, H]`` pooled embeddings (CPU) of the current model.
        phase1: ``(epochs, rows=None) -> model``: a copy of the trial's model trained that many epochs on
            candidate ``rows`` (default: every train row) by the trial's own loop; the trial's model keeps
            its initial weights.
        split: The study's splitter (``dataset.split``), for a selector that carves its own held-out rows
            from train the way valid was carved (influence's target).
        load_model: ``uri -> predictor`` (with ``.model`` and ``.tokenizer``): a saved model of the trial's task
            (MLflow URI or directory), for a selector that starts from one (influence's ``base_model_uri``);
            None where the task serves none. The selector never imports the task for it.
    """

    candidates: "MoleculeTable"
    n_train: int
    ids: Mapping[str, list[list[int]]]
    valid: "MoleculeTable"
    pad_id: int
    max_epochs: int
    seed: int
    device: "torch.device"
    config: Mapping[str, Any]
    options: Mapping[str, Any]
    model: Callable[[], "nn.Module"]
    predict: Callable[[list[list[int]]], np.ndarray]
    embed: Callable[[list[list[int]]], "torch.Tensor"]
    phase1: Callable[..., "nn.Module"]
    split: str = "random"
    load_model: Callable[[str], Any] | None = None

    @property
    def n_pool(self) -> int:
        return len(self.candidates) - self.n_train


class Selector(Protocol):
    """The fixed shape of a selection method."""

    def setup(self, ctx: SelectionContext, reporter: "Reporter", state: dict[str, Any] | None = None) -> None:
        """Run once before the first epoch (e.g. train a phase-1 model, score the pool).

        Args:
            ctx: What the selector may see of the trial (candidate rows, encoded ids, callables).
            reporter: Where the trial reports.
            state: The selector's ``state_dict()`` when the trial resumes: restore it, skip the work.
        """

    def indices(self, epoch: int) -> np.ndarray:
        """Candidate rows (train rows first, then pool rows) to train on at ``epoch`` (0-based)."""

    def epoch_sizes(self, epochs: int) -> list[int]:
        """Rows each epoch will train on (after ``setup``): sizes the learning-rate schedule."""

    def log(self) -> dict[str, float]:
        """Extra numbers reported with this epoch's metrics."""

    def write_artifacts(self, path: Path, ctx: SelectionContext) -> None:
        """Write files (e.g. ``selection.csv``) into the checkpoint directory ``path``."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed trial needs to continue the same selection (``setup`` is not called again)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class AllTrainRows:
    """No selection: every train row, every epoch."""

    knobs = None  # a selector's knob model (``trainables.knobs.KnobSet``); search spaces derive from it

    def __init__(self, config: dict[str, Any]) -> None:
        self._n = 0

    def setup(self, ctx: SelectionContext, reporter: "Reporter", state: dict[str, Any] | None = None) -> None:
        self._n = ctx.n_train

    def indices(self, epoch: int) -> np.ndarray:
        import numpy as np  # not at import: `chemtune list` reads this registry

        return np.arange(self._n)

    def epoch_sizes(self, epochs: int) -> list[int]:
        return [self._n] * epochs

    def log(self) -> dict[str, float]:
        return {}

    def write_artifacts(self, path: Path, ctx: SelectionContext) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"n": self._n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._n = int(state["n"])


SELECTORS: Registry[Callable[[dict[str, Any]], Selector]] = Registry("selection")
SELECTORS.register("none", AllTrainRows, help="train on the train split as is")
# The selection methods (torch), imported on first use; their knobs are declared in light modules.
SELECTORS.register_lazy(
    "active", "trainables.selection.active", knobs="trainables.selection.knobs:ActiveKnobs",
    help="active learning: add the n_select most MC-dropout-uncertain pool molecules each round")
SELECTORS.register_lazy(
    "curriculum", "trainables.selection.curriculum", knobs="trainables.selection.curriculum:CurriculumKnobs",
    help="curriculum: train molecules whose difficulty bin lies below a threshold that rises each epoch")
SELECTORS.register_lazy(
    "influence", "trainables.selection.influence.selector", knobs="trainables.selection.knobs:InfluenceKnobs",
    help="influence functions (LiSSA): train + the top_k pool molecules that most lower the loss on a target held out of train")


def check_selection(spec: "StudySchema", n_pool: int | None = None) -> None:
    """Fail before any trial when a selection setting the study allows cannot work.

    Every selection the study can pick (fixed, narrowed, or all registered) whose factory has a
    ``check_study(spec, n_pool, name)`` classmethod (``Knobs.check_study``) is checked: fixed knobs
    valid, a pool present, and (once the data is read, ``n_pool`` given) big enough.
    """
    for name in selection_names(spec):
        check = getattr(SELECTORS.get(name), "check_study", None)
        if check is not None:
            check(spec, n_pool, name)


def selection_names(spec: "StudySchema") -> list[str]:
    """The selection methods a trial of the study can run (fixed, a grid's or narrowed values, or all)."""
    if "selection" in spec.fixed:
        return [spec.fixed["selection"]]
    for values in (spec.grid, spec.ranges):
        if "selection" in values:
            return list(values["selection"])
    return list(SELECTORS.names()) if "selection" in spec.searched else ["none"]


def selection_summary(spec: "StudySchema", train_smiles: list[str]) -> dict[str, Any]:
    """Study parameters the possible selectors add (``knobs.data_summary``; e.g. influence's target size)."""
    out: dict[str, Any] = {}
    for name in selection_names(spec):
        summary = getattr(getattr(SELECTORS.get(name), "knobs", None), "data_summary", None)
        if summary is not None:
            out.update(summary(spec, train_smiles))
    return out
