"""Grid studies: every combination of the study's ``grid`` values runs exactly once (Optuna's GridSampler).

A paper table is a grid (the 15 treatments; gamma 0.0, 0.1, ..., 1.0): sampling it with TPE repeats
some rows and misses others. With ``sampler: grid`` the grid parameters become categorical over the
listed values, every other parameter of the space must be fixed, and ``num_trials`` must equal the
number of combinations, so the study is the table.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import optuna

from trainables.errors import StudyError

if TYPE_CHECKING:
    from search_spaces.base import DefineByRun, SearchSpace
    from trainables.spec import StudySchema

__all__ = ["check_grid", "grid_define_by_run", "grid_sampler", "grid_points"]


def check_grid(space: "SearchSpace", grid: dict[str, list[Any]], fixed: dict[str, Any], ranges: dict[str, Any],
               num_trials: int) -> None:
    """Raise :class:`StudyError` naming the key when the grid does not describe one run per row."""
    by_name = {p.name: p for p in space.params}
    if not grid:
        raise StudyError("grid: sampler 'grid' needs grid: {parameter: [values, ...]}")
    for name, values in grid.items():
        if name not in by_name:
            raise StudyError(f"grid.{name}: unknown parameter; the space has {space.names}")
        if name in fixed or name in ranges:
            raise StudyError(f"grid.{name}: also given in {'fixed' if name in fixed else 'ranges'}")
        if not isinstance(values, list) or not values:
            raise StudyError(f"grid.{name}: give a non-empty list of values")
        if len(set(map(repr, values))) != len(values):
            raise StudyError(f"grid.{name}: a value is listed twice")
        for v in values:
            try:
                by_name[name].check_fixed(v)
            except StudyError as err:
                raise StudyError(f"grid.{name}: {str(err).split(': ', 1)[-1]}") from None
            p = by_name[name]
            if p.kind != "categorical" and not (p.low <= v <= p.high):
                raise StudyError(f"grid.{name}: {v!r} is outside [{p.low:g}, {p.high:g}]")
    free = grid_free_params(space, grid, fixed)
    if free:
        raise StudyError(f"grid: fix every other parameter of the space (a grid samples nothing else); free: {free}")
    size = math.prod(len(v) for v in grid.values())
    if num_trials != size:
        raise StudyError(f"num_trials: {num_trials}, but the grid has {size} combinations (each runs exactly once)")


def grid_free_params(space: "SearchSpace", grid: dict[str, list[Any]], fixed: dict[str, Any]) -> list[str]:
    """The space's parameters some row would still sample: neither fixed nor in the grid, and active on a
    row (a parameter a row activates, LoRA rank on a LoRA row, must be fixed too)."""
    free: list[str] = []
    for point in grid_points(grid):
        values = {**fixed, **point}
        free += [p.name for p in space.params if p.name not in values and p.name not in free
                 and all(values.get(k) in allowed for k, allowed in p.when.items())]
    return free


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, in the order the grid lists its values."""
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def grid_define_by_run(space: "SearchSpace", grid: dict[str, list[Any]], fixed: dict[str, Any]) -> "DefineByRun":
    """The space's define-by-run function with the grid parameters categorical over their values.

    Conditional parameters a row activates are fixed (:func:`check_grid` makes sure).
    """
    from search_spaces.base import DefineByRun

    params = tuple(replace(p, kind="categorical", choices=tuple(grid[p.name])) if p.name in grid else p
                   for p in space.params)
    params = tuple(replace(p, choices=tuple(p.options())) if p.kind == "categorical" else p for p in params)
    return DefineByRun(params, dict(fixed))


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for ask/tell (Ray Tune asks, ``num_trials`` bounds the study): its ``after_trial`` only
    stops an ``optimize`` loop, and ``study.stop()`` outside one raises, so it is left out."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def grid_sampler(spec: "StudySchema") -> optuna.samplers.GridSampler:
    """Optuna's GridSampler over ``spec.grid`` (seeded: the order rows start in)."""
    return _AskTellGridSampler({k: list(v) for k, v in spec.grid.items()}, seed=spec.seed)
