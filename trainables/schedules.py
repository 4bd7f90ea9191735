"""Learning-rate schedules of both tasks, each sound for any number of optimizer steps (one included).

Why one module: a schedule that works at 10,000 steps can divide by zero at 10 (``OneCycleLR`` whose
warm-up rounds to zero steps crashed small retro trials), and both trainers need the same guard. Each
schedule is torch's or transformers' own; this module only sizes its phases so that every phase has
at least one step's worth of room.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["SCHEDULES", "lr_scheduler"]

#: ``one_cycle``: warm up to ``lr`` then anneal (Chemformer's ``cycle``); ``cyclic``: ``CyclicLR``
#: triangles between ``lr / 10`` and ``lr``; ``linear``: linear warm-up then linear decay to 0;
#: ``constant``: ``lr`` throughout (Adam as the property report ran it).
SCHEDULES = ("one_cycle", "cyclic", "linear", "constant")


def lr_scheduler(name: str, optimizer: torch.optim.Optimizer, *, total_steps: int, warmup: float,
                 cycles: int = 1) -> Any:
    """The schedule ``name`` over ``total_steps`` steps; peak learning rates are the optimizer's groups' ``lr``.

    Args:
        name: one of :data:`SCHEDULES`.
        total_steps: optimizer steps the run will take (>= 1).
        warmup: share of the steps spent warming up (``one_cycle``, ``linear``); ``cyclic``: unused.
        cycles: ``cyclic`` only: up-and-down triangles over the run.
    """
    total = max(int(total_steps), 1)
    if name == "one_cycle":
        # OneCycleLR divides by each phase's length (pct_start * total - 1 steps, then the rest): give
        # each at least half a step, and at least 3 steps in all (a shorter run ends before the anneal).
        span = max(total, 3)
        pct = min(max(float(warmup), 1.5 / span), 1.0 - 0.5 / span)
        peaks = [g["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=span, pct_start=pct)
    if name == "cyclic":
        peaks = [g["lr"] for g in optimizer.param_groups]
        half = max(total // (2 * max(int(cycles), 1)), 1)
        # cycle_momentum=False: Adam(W) has betas, not the SGD momentum CyclicLR would cycle.
        return torch.optim.lr_scheduler.CyclicLR(optimizer, base_lr=[p / 10 for p in peaks], max_lr=peaks,
                                                 step_size_up=half, cycle_momentum=False)
    if name == "linear":
        from transformers import get_linear_schedule_with_warmup

        return get_linear_schedule_with_warmup(optimizer, int(float(warmup) * total), total)
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"unknown learning-rate schedule {name!r}; choose one of {list(SCHEDULES)}")
