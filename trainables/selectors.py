"""Training-set selection for property trials: which rows each epoch trains on.

A selector sees the candidate rows (train rows first, then pool rows) and returns, for every
epoch, the indices to train on. ``none`` is the do-nothing twin: all train rows, every epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from trainables.registry import Registry

if TYPE_CHECKING:
    from trainables.spec import StudySpec
    from trainables.base import Reporter
    from trainables.property import PropertyTrainer

__all__ = ["SELECTORS", "Selector", "AllTrainRows", "check_selection"]


class Selector(Protocol):
    """The fixed shape of a selection method."""

    def setup(self, trainer: "PropertyTrainer", reporter: "Reporter", state: dict[str, Any] | None = None) -> None:
        """Run once before the first epoch (e.g. train a phase-1 model, score the pool).

        Args:
            trainer: The trial's trainer (model, candidate rows, encoded ids).
            reporter: Where the trial reports.
            state: The selector's ``state_dict()`` when the trial resumes: restore it, skip the work.
        """

    def indices(self, epoch: int) -> np.ndarray:
        """Candidate rows (train rows first, then pool rows) to train on at ``epoch`` (0-based)."""

    def log(self) -> dict[str, float]:
        """Extra numbers reported with this epoch's metrics."""

    def write_artifacts(self, path: Path, trainer: "PropertyTrainer") -> None:
        """Write files (e.g. ``selection.csv``) into the checkpoint directory ``path``."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed trial needs to continue the same selection (``setup`` is not called again)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class AllTrainRows:
    """No selection: every train row, every epoch."""

    knobs = None  # a selector's knob model (``trainables.knobs.KnobSet``); search spaces derive from it

    def __init__(self, config: dict[str, Any]) -> None:
        self._n = 0

    def setup(self, trainer: "PropertyTrainer", reporter: "Reporter", state: dict[str, Any] | None = None) -> None:
        self._n = trainer.n_train

    def indices(self, epoch: int) -> np.ndarray:
        return np.arange(self._n)

    def log(self) -> dict[str, float]:
        return {}

    def write_artifacts(self, path: Path, trainer: "PropertyTrainer") -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"n": self._n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._n = int(state["n"])


SELECTORS: Registry[Callable[[dict[str, Any]], Selector]] = Registry("selection")
SELECTORS.register("none", AllTrainRows, help="train on the train split as is")


def check_selection(spec: "StudySpec", n_pool: int | None = None) -> None:
    """Fail before any trial when a selection setting the study allows cannot work.

    Every selection the study can pick (fixed, narrowed, or all registered) whose factory has a
    ``check_study(spec, n_pool, name)`` classmethod (``Knobs.check_study``) is checked: fixed knobs
    valid, a pool present, and (once the data is read, ``n_pool`` given) big enough.
    """
    if "selection" in spec.fixed:
        names = [spec.fixed["selection"]]
    elif "selection" in spec.ranges:
        names = list(spec.ranges["selection"])
    else:
        names = [n for n in SELECTORS.names() if n != "none"] if "selection" in spec.searched else ["none"]
    for name in names:
        check = getattr(SELECTORS.get(name), "check_study", None)
        if check is not None:
            check(spec, n_pool, name)
