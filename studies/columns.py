"""What the leaderboard, the register rules and the model card read of a study's columns: each metric's
direction, the Pareto front, how a number prints.

Apart from :mod:`studies.results` so that the rules (:mod:`studies.choose`) and the card
(:mod:`studies.card`), which :mod:`studies.results` calls, need not import it back.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from trainables.metrics import COSTS

__all__ = ["COUNTS", "format_value", "is_test_metric", "metric_direction", "objectives", "pareto_mask"]


def is_test_metric(metric: str) -> bool:
    return metric.startswith("test_")


def metric_direction(metric: str, parent_tags: dict[str, str]) -> str:
    """``min`` or ``max`` for ``metric``: the study's mode for its own metric, else the task's rule
    (recorded on the study run as ``chemtune.maximize`` so this needs no task import)."""
    if metric == parent_tags.get("chemtune.metric"):
        return parent_tags.get("chemtune.mode", "min")
    if metric in COSTS:  # what a trial spends: less is better
        return "min"
    if "chemtune.maximize" in parent_tags:
        maximize = set(filter(None, parent_tags["chemtune.maximize"].split(",")))
    else:  # a study tracked before the tag existed
        from trainables import TASKS

        maximize = set(TASKS.get(parent_tags["chemtune.task"]).maximize)
    return "max" if metric.split("_", 1)[-1] in maximize else "min"


def objectives(parent_tags: dict[str, str]) -> list[str]:
    """The objectives of a multi-objective study (its metric first), or ``[]`` for a one-metric study."""
    return [o for o in parent_tags.get("chemtune.objectives", "").split(",") if o]


def pareto_mask(frame: pd.DataFrame, columns: list[str], modes: list[str]) -> pd.Series:
    """Rows of ``frame`` no other row dominates on ``columns`` (each minimised or maximised by ``modes``).

    A row with a missing value is never on the front. The leaderboard reads MLflow, not Optuna, so the
    front is computed here (Optuna's ``study.best_trials`` is the same front of the same values).
    """
    import numpy as np

    values = frame[columns].astype(float).to_numpy() * np.array([1.0 if m == "min" else -1.0 for m in modes])
    ok = ~np.isnan(values).any(axis=1)
    front = np.zeros(len(frame), dtype=bool)
    for i in np.flatnonzero(ok):
        others = values[ok]
        front[i] = not ((others <= values[i]).all(axis=1) & (others < values[i]).any(axis=1)).any()
    return pd.Series(front, index=frame.index)


COUNTS = ("epochs", "trainable_params", "optuna_trial")
"""Leaderboard columns that hold counts: a column with a missing value turns them into floats (40.0)."""


def format_value(value: Any, count: bool = False) -> str:
    """Numbers as a person reads them: counts with thousands separators, scores with 4 digits.

    ``count``: the value is a count (a column of :data:`COUNTS`), so ``40.0`` prints as ``40``.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value)
    integral = isinstance(value, float) and value.is_integer()
    if isinstance(value, int) or (integral and (count or abs(value) >= 1000)):
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)
