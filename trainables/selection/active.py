"""Active learning by Monte-Carlo dropout uncertainty (Gal & Ghahramani 2016).

Training starts on the train split. In each of ``rounds`` acquisition rounds (spread evenly over
the epochs) the current model predicts every remaining pool molecule ``mc_passes`` times with
dropout active -- all passes in one forward, the batch repeated T times -- and the ``n_select``
molecules with the largest standard deviation join the training rows with their labels. The
``random`` acquisition draws the same number at random: the baseline that shows whether
uncertainty helps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from trainables.batching import model_device, padded_batches
from trainables.errors import StudyError
from trainables.selection.base import SELECTORS
from trainables.selection.common import write_selection_csv
from trainables.selection.knobs import ActiveKnobs, acquisition_epochs

if TYPE_CHECKING:
    from trainables.base import Reporter
    from trainables.selection.base import SelectionContext

__all__ = ["ActiveKnobs", "ActiveSelector", "mc_dropout", "mc_dropout_loop", "acquisition_epochs"]


@contextmanager
def _dropout_on(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.train()  # dropout on; no gradients are taken
    try:
        yield
    finally:
        model.train(was_training)


def _chunks(ids: list[list[int]], pad_id: int, batch_size: int, device: torch.device | str | None,
            model: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Length-sorted chunks on the model's device: (row indices, padded ids, mask)."""
    for chunk, input_ids, mask in padded_batches(ids, pad_id, batch_size, device or model_device(model)):
        yield torch.as_tensor(chunk), input_ids, mask


@torch.no_grad()
def mc_dropout(model: nn.Module, ids: list[list[int]], pad_id: int, passes: int, batch_size: int = 64,
               device: torch.device | str | None = None) -> torch.Tensor:
    """Predictions [passes, N] with dropout active; each chunk's T passes run as one forward.

    The chunk of ``batch_size`` molecules is repeated ``passes`` times along the batch axis, so
    every copy draws its own dropout masks in a single call.
    """
    out = torch.empty(passes, len(ids))
    with _dropout_on(model):
        for chunk, input_ids, mask in _chunks(ids, pad_id, batch_size, device, model):
            pred = model(input_ids.repeat(passes, 1), mask.repeat(passes, 1))
            out[:, chunk] = pred.float().cpu().view(passes, len(chunk))
    return out


@torch.no_grad()
def mc_dropout_loop(model: nn.Module, ids: list[list[int]], pad_id: int, passes: int, batch_size: int = 64,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """The same as :func:`mc_dropout` with one forward per pass (the benchmark's and test's reference)."""
    out = torch.empty(passes, len(ids))
    with _dropout_on(model):
        for chunk, input_ids, mask in _chunks(ids, pad_id, batch_size, device, model):
            for t in range(passes):
                out[t, chunk] = model(input_ids, mask).float().cpu()
    return out


class ActiveSelector:
    """Train rows plus the pool molecules acquired so far; acquires at the start of round epochs."""

    knobs = ActiveKnobs
    check_study = ActiveKnobs.check_study

    def __init__(self, config: dict[str, Any]) -> None:
        self.knobs = ActiveKnobs.from_config(config, where="selection 'active'")
        self.acquired: list[int] = []
        self.uncertainty: list[float] = []
        self.round_of: list[int] = []
        self.done = 0
        self.last: dict[str, float] = {}
        self._ctx: SelectionContext | None = None

    def setup(self, ctx: "SelectionContext", reporter: "Reporter", state: dict[str, Any] | None = None) -> None:
        self._ctx = ctx
        n_pool = ctx.n_pool
        k = self.knobs
        if n_pool == 0:
            raise StudyError("selection 'active': the pool is empty")
        if k.n_select * k.rounds > n_pool:
            raise StudyError(f"selection 'active': n_select {k.n_select} x rounds {k.rounds} is larger than the pool ({n_pool})")
        if k.rounds >= ctx.max_epochs:
            raise StudyError(f"selection 'active': rounds {k.rounds} must be below max_epochs {ctx.max_epochs}")
        self.epochs = acquisition_epochs(k.rounds, ctx.max_epochs)
        if state is not None:
            self.load_state_dict(state)

    def _acquire(self, ctx: "SelectionContext") -> None:
        k = self.knobs
        taken = set(self.acquired)
        remaining = np.asarray([i for i in range(ctx.n_train, len(ctx.candidates)) if i not in taken])
        if k.acquisition == "random":
            rng = np.random.default_rng(ctx.seed * 1000 + self.done)
            pick = rng.choice(len(remaining), size=k.n_select, replace=False)
            score = np.full(len(pick), np.nan)
        else:
            torch.manual_seed(ctx.seed * 1000 + self.done)
            ids = [ctx.ids["candidates"][i] for i in remaining]
            preds = mc_dropout(ctx.model(), ids, ctx.pad_id, k.mc_passes, k.mc_batch, ctx.device)
            std = preds.std(0).numpy()
            if not np.any(std > 0):
                raise StudyError("selection 'active': MC-dropout predictions do not vary; the model has no "
                                 "active dropout (set head_dropout > 0)")
            pick = np.argsort(-std, kind="stable")[: k.n_select]
            score = std[pick]
            self.last["active_mean_std_pool"] = float(std.mean())
        self.acquired += remaining[pick].tolist()
        self.uncertainty += score.tolist()
        self.done += 1
        self.round_of += [self.done] * len(pick)

    def indices(self, epoch: int) -> np.ndarray:
        ctx = self._ctx
        assert ctx is not None, "setup() first"
        while self.done < len(self.epochs) and self.epochs[self.done] <= epoch:
            self._acquire(ctx)
        self.last.update({"active_round": float(self.done), "active_acquired": float(len(self.acquired))})
        return np.concatenate([np.arange(ctx.n_train), np.asarray(self.acquired, dtype=np.int64)])

    def epoch_sizes(self, epochs: int) -> list[int]:
        """Train rows plus ``n_select`` per acquisition round held by then."""
        assert self._ctx is not None, "setup() first"
        return [self._ctx.n_train + self.knobs.n_select * sum(a <= e for a in self.epochs) for e in range(epochs)]

    def log(self) -> dict[str, float]:
        return dict(self.last)

    def write_artifacts(self, path: Path, ctx: "SelectionContext") -> None:
        """``selection.csv``: acquired pool molecules, their round and MC-dropout std (NaN for random)."""
        if self.acquired:
            write_selection_csv(path / "selection.csv", ctx, np.asarray(self.acquired, dtype=np.int64),
                                {"round": self.round_of, "mc_std": self.uncertainty})

    def state_dict(self) -> dict[str, Any]:
        return {"acquired": self.acquired, "uncertainty": self.uncertainty, "round_of": self.round_of,
                "done": self.done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.acquired = list(state["acquired"])
        self.uncertainty = list(state["uncertainty"])
        self.round_of = list(state["round_of"])
        self.done = int(state["done"])


SELECTORS.register("active", ActiveSelector,
                   help="active learning: add the n_select most MC-dropout-uncertain pool molecules each round")
