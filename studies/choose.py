"""Choosing the trial to ship by a rule: ``best``, ``cheapest-within:DELTA`` or ``knee`` (``register --rule``).

A cost-aware study's winner is rarely the single best score: a LoRA trial 0.01 RMSE behind full fine-tuning
at a hundredth of the trainable parameters is usually the one to ship. The rules read the leaderboard (only
complete trials with a logged model compete) and say in one line why they chose what they chose; that line
is recorded on the registered version (``chemtune.rule``, ``chemtune.rule_reason``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from studies.columns import metric_direction, pareto_mask

__all__ = ["Rule", "parse_rule", "choose", "candidates"]

_CHEAPEST = re.compile(r"^cheapest-within:(?P<delta>[0-9]*\.?[0-9]+(?:e-?[0-9]+)?)$")


@dataclass(frozen=True)
class Rule:
    """A parsed ``--rule``: ``kind`` is ``best``, ``cheapest-within`` or ``knee``; ``delta`` for the second."""

    kind: str
    delta: float = 0.0

    def __str__(self) -> str:
        return f"cheapest-within:{self.delta:g}" if self.kind == "cheapest-within" else self.kind


def parse_rule(text: str) -> Rule:
    """``best``, ``knee`` or ``cheapest-within:DELTA`` (DELTA >= 0, in the metric's units); else a clear error."""
    from trainables.errors import StudyError

    if text in ("best", "knee"):
        return Rule(text)
    match = _CHEAPEST.match(text)
    if match and math.isfinite(float(match["delta"])):
        return Rule("cheapest-within", float(match["delta"]))
    raise StudyError(f"--rule {text!r}: use best, knee or cheapest-within:DELTA (e.g. cheapest-within:0.02, "
                     "DELTA in the metric's units)")


def candidates(board: pd.DataFrame) -> pd.DataFrame:
    """Complete trials with a logged model, in the leaderboard's order (best first by its metric)."""
    if board.empty:
        return board
    return board[(board["role"] == "trial") & (board["state"] == "complete") & board["model_uri"].notna()]


def _cost(board: pd.DataFrame) -> str:
    """The cost a rule trades against: the study's first cost objective, else trainable parameters."""
    goals = board.attrs.get("objectives") or []
    return goals[1] if len(goals) > 1 else "trainable_params"


def choose(board: pd.DataFrame, rule: Rule, parent_tags: dict[str, str]) -> tuple[pd.Series, str]:
    """The row ``rule`` picks from ``board`` (a leaderboard sorted by its metric) and why, in one line."""
    from trainables.errors import StudyError

    pool = candidates(board)
    metric, mode = board.attrs["metric"], board.attrs["mode"]
    pool = pool[pool[metric].notna()]
    if pool.empty:
        raise StudyError(f"no complete trial with a logged model and a {metric} score")
    best = pool.iloc[0]
    if rule.kind == "best":
        return best, f"best {metric} ({best[metric]:.4g})"
    cost = _cost(board)
    if pool[cost].isna().all():
        raise StudyError(f"--rule {rule}: no trial logged the cost {cost}")
    if rule.kind == "cheapest-within":
        gap = (pool[metric] - best[metric]).abs()
        near = pool[gap <= rule.delta + 1e-12].sort_values([cost, metric], ascending=[True, mode == "min"],
                                                           kind="stable", na_position="last")
        pick = near.iloc[0]
        return pick, (f"cheapest by {cost} ({pick[cost]:.4g}) of the {len(near)} trial(s) within {rule.delta:g} of "
                      f"the best {metric} ({best[metric]:.4g}; this one {pick[metric]:.4g})")
    # knee: on the front of (metric, cost), the point nearest the ideal corner once both are scaled to [0, 1]
    modes = [mode, metric_direction(cost, parent_tags)]
    scored = pool[pool[cost].notna()]
    front = scored[pareto_mask(scored, [metric, cost], modes)]
    values = front[[metric, cost]].astype(float).to_numpy() * np.array([1.0 if m == "min" else -1.0 for m in modes])
    span = values.max(axis=0) - values.min(axis=0)
    scaled = (values - values.min(axis=0)) / np.where(span > 0, span, 1.0)
    pick = front.iloc[int(np.argmin(np.hypot(scaled[:, 0], scaled[:, 1])))]
    return pick, (f"knee of the {len(front)}-trial front of {metric} and {cost}: nearest the ideal corner once "
                  f"both are scaled ({metric} {pick[metric]:.4g}, {cost} {pick[cost]:.4g})")
