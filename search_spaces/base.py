"""Search spaces: declared parameters turned into an Optuna define-by-run function.

A space is a list of :class:`Param`; a parameter may apply only when earlier ones have given
values (``when``), which is what makes the space conditional (LoRA rank only for LoRA trials).
A study can fix any parameter or narrow its range; unknown names are errors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import optuna

from trainables.errors import StudyError
from trainables.registry import Registry

__all__ = ["Param", "SearchSpace", "SPACES"]


@dataclass(frozen=True)
class Param:
    """One searchable parameter.

    Attributes:
        name: Key in the trial config.
        kind: ``"float"``, ``"int"`` or ``"categorical"``.
        low, high: Bounds for numbers.
        choices: Values for categoricals (a callable is read at use, e.g. registry keys).
        log: Sample numbers on a log scale.
        step: Grid step for numbers.
        when: ``{param: allowed values}``; the parameter exists only when all hold.
        help: One line for ``chemtune list spaces``.
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None
    log: bool = False
    step: float | None = None
    when: dict[str, Sequence[Any]] = field(default_factory=dict)
    help: str = ""

    def options(self) -> list[Any]:
        return list(self.choices() if callable(self.choices) else self.choices or [])

    def describe(self) -> str:
        if self.kind == "categorical":
            rng = "{" + ", ".join(map(str, self.options())) + "}"
        else:
            rng = f"[{self.low:g}, {self.high:g}]" + (" log" if self.log else "") + (f" step {self.step:g}" if self.step else "")
        cond = "".join(f" if {k} in {list(v)}" for k, v in self.when.items())
        return f"{self.kind} {rng}{cond}"

    def narrowed(self, value: Any) -> "Param":
        """This parameter with the range a study gives; raise if it leaves the declared range."""
        if self.kind == "categorical":
            values = list(value) if isinstance(value, (list, tuple)) else None
            if not values or any(v not in self.options() for v in values):
                raise StudyError(f"ranges.{self.name}: must be a non-empty list from {self.options()}, got {value!r}")
            return replace(self, choices=tuple(values))
        if not (isinstance(value, (list, tuple)) and len(value) == 2):
            raise StudyError(f"ranges.{self.name}: give [low, high], got {value!r}")
        low, high = (float(v) for v in value)
        if not (self.low <= low <= high <= self.high):  # type: ignore[operator]
            raise StudyError(f"ranges.{self.name}: [{low:g}, {high:g}] is outside [{self.low:g}, {self.high:g}] or reversed")
        return replace(self, low=low, high=high)

    def check_fixed(self, value: Any) -> None:
        if self.kind == "categorical":
            if value not in self.options():
                raise StudyError(f"fixed.{self.name}: {value!r} is not one of {self.options()}")
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            raise StudyError(f"fixed.{self.name}: must be a number, got {value!r}")

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, self.options())
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)


@dataclass(frozen=True)
class SearchSpace:
    """An ordered list of parameters (a parameter's ``when`` may only name earlier ones)."""

    params: tuple[Param, ...]
    help: str = ""

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for p in self.params:
            missing = set(p.when) - seen
            if missing:
                raise ValueError(f"parameter {p.name!r} depends on {sorted(missing)}, which come later or not at all")
            seen.add(p.name)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def extend(self, *params: Param, help: str = "") -> "SearchSpace":
        """A new space with ``params`` appended."""
        return SearchSpace(self.params + params, help=help or self.help)

    def validate_overrides(self, fixed: dict[str, Any], ranges: dict[str, Any]) -> None:
        """Raise :class:`StudyError` for unknown names or values outside the declared ranges."""
        by_name = {p.name: p for p in self.params}
        for section, values in (("fixed", fixed), ("ranges", ranges)):
            unknown = sorted(set(values) - set(by_name))
            if unknown:
                raise StudyError(f"{section}: unknown parameter(s) {unknown}; the space has {self.names}")
        both = sorted(set(fixed) & set(ranges))
        if both:
            raise StudyError(f"{both} are both fixed and given a range")
        for name, value in fixed.items():
            by_name[name].check_fixed(value)
        for name, value in ranges.items():
            by_name[name].narrowed(value)

    def define_by_run(self, fixed: dict[str, Any] | None = None, ranges: dict[str, Any] | None = None
                      ) -> "DefineByRun":
        """The Optuna define-by-run function; fixed values come back as constants (not suggested)."""
        fixed, ranges = dict(fixed or {}), dict(ranges or {})
        self.validate_overrides(fixed, ranges)
        params = tuple(p.narrowed(ranges[p.name]) if p.name in ranges else p for p in self.params)
        # Registry-backed choices are read now, so the function pickles as plain values.
        params = tuple(replace(p, choices=tuple(p.options())) if p.kind == "categorical" else p for p in params)
        return DefineByRun(params, fixed)

    def sample(self, seed: int = 0, fixed: dict[str, Any] | None = None) -> dict[str, Any]:
        """One full configuration drawn by Optuna (for tests and direct calls)."""
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        trial = study.ask()
        constants = self.define_by_run(fixed)(trial)
        return {**trial.params, **constants}


@dataclass(frozen=True)
class DefineByRun:
    """A picklable define-by-run function (Tune saves the searcher, and this with it)."""

    params: tuple[Param, ...]
    fixed: dict[str, Any]

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        values: dict[str, Any] = {}
        constants: dict[str, Any] = {}
        for p in self.params:
            if any(values.get(k, constants.get(k)) not in allowed for k, allowed in p.when.items()):
                continue
            if p.name in self.fixed:
                constants[p.name] = self.fixed[p.name]
            else:
                values[p.name] = p.suggest(trial)
        return constants


SPACES: Registry[SearchSpace] = Registry("space")
