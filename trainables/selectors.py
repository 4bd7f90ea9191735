"""Training-set selection for property trials: which rows each epoch trains on.

A selector sees the candidate rows (train rows first, then pool rows) and returns, for every
epoch, the indices to train on. ``none`` is the do-nothing twin: all train rows, every epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from trainables.registry import Registry

if TYPE_CHECKING:
    from trainables.base import Reporter
    from trainables.property import PropertyTrainer

__all__ = ["SELECTORS", "Selector", "AllTrainRows"]


class Selector(Protocol):
    """The fixed shape of a selection method."""

    def setup(self, trainer: "PropertyTrainer", reporter: "Reporter") -> None:
        """Run once before the first epoch (e.g. train a phase-1 model, score the pool)."""

    def indices(self, epoch: int) -> np.ndarray:
        """Candidate rows (train rows first, then pool rows) to train on at ``epoch`` (0-based)."""

    def log(self) -> dict[str, float]:
        """Extra numbers reported with this epoch's metrics."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed trial needs to continue the same selection (``setup`` is not called again)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class AllTrainRows:
    """No selection: every train row, every epoch."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._n = 0

    def setup(self, trainer: "PropertyTrainer", reporter: "Reporter") -> None:
        self._n = trainer.n_train

    def indices(self, epoch: int) -> np.ndarray:
        return np.arange(self._n)

    def log(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"n": self._n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._n = int(state["n"])


SELECTORS: Registry[Callable[[dict[str, Any]], Selector]] = Registry("selection")
SELECTORS.register("none", AllTrainRows, help="train on the train split as is")
