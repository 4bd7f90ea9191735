"""Search spaces, derived from the knobs the plug-ins declare, turned into Optuna define-by-run functions.

A plug-in declares each knob once (``trainables.knobs``: type, default, bounds, help, and a ``Search``
for the ones a space samples); a space is the ordered list of :class:`Param` derived from those models
(:func:`params_of`, :func:`plugin_params`). A parameter may apply only when earlier ones have given
values (``when``), which is what makes the space conditional (LoRA rank only for LoRA trials).
A study can fix any declared knob (searched or not) or narrow a searched one's range; unknown names,
and values the declaring model refuses, are errors that name the key.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import TypeAdapter, ValidationError

from trainables.errors import StudyError
from trainables.knobs import KnobSet, format_errors, search_of
from trainables.registry import Registry

if TYPE_CHECKING:  # optuna is imported where a trial is sampled: `chemtune list spaces` needs none of it
    import optuna

__all__ = ["Param", "SearchSpace", "SPACES", "params_of", "plugin_params"]


@dataclass(frozen=True)
class Param:
    """One knob of a space (derived from a plug-in's declaration; see :func:`params_of`).

    Attributes:
        name: Key in the trial config.
        kind: ``"float"``, ``"int"`` or ``"categorical"``.
        low, high: Bounds for numbers.
        choices: Values for categoricals (a callable is read at use, e.g. registry keys).
        log: Sample numbers on a log scale.
        step: Grid step for numbers.
        when: ``{param: allowed values}``; the parameter exists only when all hold.
        help: One line for ``chemtune list spaces``.
        searchable: ``False``: the space never samples it; a study may still fix it.
        default: The declared default (for ``chemtune list spaces``).
        owner: The knob model that declares it; fixed values are validated (and coerced) by it.
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
    searchable: bool = True
    default: Any = None
    owner: type[KnobSet] | None = None

    def options(self) -> list[Any]:
        return list(self.choices() if callable(self.choices) else self.choices or [])

    def describe(self) -> str:
        cond = "".join(f" if {k} in {list(v)}" for k, v in self.when.items())
        if not self.searchable:
            return f"{self.kind} = {self.default!r} (fixed only){cond}"
        if self.kind == "categorical":
            rng = "{" + ", ".join(map(str, self.options())) + "}"
        else:
            rng = f"[{self.low:g}, {self.high:g}]" + (" log" if self.log else "") + (f" step {self.step:g}" if self.step else "")
        return f"{self.kind} {rng}{cond}"

    def coerce(self, value: Any, section: str = "fixed") -> Any:
        """``value`` as the declared field reads it (type, bounds); raise :class:`StudyError` naming ``section.name``.

        Rules across knobs (model validators) are checked on all fixed values together, by the space.
        """
        if self.owner is None:
            return value
        field_info = self.owner.model_fields[self.name]
        try:
            return TypeAdapter(Annotated[field_info.annotation, field_info]).validate_python(value)
        except ValidationError as err:
            raise StudyError(format_errors(err, f"{section}.{self.name}")) from None

    def narrowed(self, value: Any) -> "Param":
        """This parameter with the range a study gives; raise if it leaves the declared range."""
        if not self.searchable:
            raise StudyError(f"ranges.{self.name}: not searched in this space; fix it instead (fixed.{self.name})")
        if self.kind == "categorical":
            values = list(value) if isinstance(value, (list, tuple)) else None
            if not values or any(v not in self.options() for v in values):
                raise StudyError(f"ranges.{self.name}: must be a non-empty list from {self.options()}, got {value!r}")
            return replace(self, choices=tuple(values))
        if not (isinstance(value, (list, tuple)) and len(value) == 2):
            raise StudyError(f"ranges.{self.name}: give [low, high], got {value!r}")
        try:
            low, high = (float(v) for v in value)
        except (TypeError, ValueError):
            raise StudyError(f"ranges.{self.name}: give two numbers [low, high], got {value!r}") from None
        if not (self.low <= low <= high <= self.high):  # type: ignore[operator]
            raise StudyError(f"ranges.{self.name}: [{low:g}, {high:g}] is outside [{self.low:g}, {self.high:g}] or reversed")
        return replace(self, low=low, high=high)

    def check_fixed(self, value: Any) -> Any:
        """The fixed ``value``, validated (and coerced) by the declaring model."""
        if self.searchable and self.kind == "categorical":
            if value not in self.options():
                raise StudyError(f"fixed.{self.name}: {value!r} is not one of {self.options()}")
        elif self.owner is None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise StudyError(f"fixed.{self.name}: must be a number, got {value!r}")
        return self.coerce(value)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, self.options())
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)


def _kind(annotation: Any, search: Any) -> str:
    if search is not None and search.choices is not None:
        return "categorical"
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if typing.get_origin(annotation) is typing.Literal:
        return "categorical"
    if args[0] is bool:
        return "categorical"
    if args[0] is int:
        return "int"
    if args[0] is float:
        return "float"
    return "categorical" if search is not None else getattr(args[0], "__name__", str(args[0]))


def params_of(knobs: type[KnobSet], when: dict[str, Sequence[Any]] | None = None, omit: Iterable[str] = ()
              ) -> list[Param]:
    """The parameters of every knob ``knobs`` declares (``omit`` left out), existing only ``when``."""
    out: list[Param] = []
    for name, info in knobs.model_fields.items():
        if name in set(omit):
            continue
        search = search_of(knobs, name)
        base = dict(when or {})
        kind = _kind(info.annotation, search)
        common = dict(name=name, kind=kind, help=info.description or "", default=info.default, owner=knobs)
        if search is None:
            out.append(Param(**common, when=base, searchable=False))
            continue
        choices = search.choices
        if choices is None and kind == "categorical":
            choices = typing.get_args(info.annotation) or (False, True)
        out.append(Param(**common, low=search.low, high=search.high, log=search.log, step=search.step,
                         choices=choices, when={**base, **dict(search.when)}))
    return out


def plugin_params(key: str, choices: Sequence[str], knobs_of: Callable[[str], Iterable[type[KnobSet] | None]]
                  ) -> list[Param]:
    """The knobs of the plug-ins a categorical ``key`` chooses among, each existing only for its choices.

    Args:
        key: The choosing knob (``method``, ``selection``, ``treatment``).
        choices: Its values.
        knobs_of: ``choice -> knob models`` (several for a combination such as ``lora_both+adapter_all``).
    """
    users: dict[type[KnobSet], list[str]] = {}
    for choice in choices:
        for model in knobs_of(choice):
            if model is not None and choice not in users.setdefault(model, []):
                users[model].append(choice)
    return [p for model, used in users.items() for p in params_of(model, {key: used})]


@dataclass(frozen=True)
class SearchSpace:
    """An ordered list of knobs (a knob's ``when`` may only name earlier ones); ``params`` are the searched."""

    declared: tuple[Param, ...]
    help: str = ""

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for p in self.declared:
            missing = set(p.when) - seen
            if missing:
                raise ValueError(f"parameter {p.name!r} depends on {sorted(missing)}, which come later or not at all")
            if p.name in seen:
                raise ValueError(f"parameter {p.name!r} is declared twice")
            seen.add(p.name)

    @property
    def params(self) -> tuple[Param, ...]:
        """The knobs the space samples."""
        return tuple(p for p in self.declared if p.searchable)

    @property
    def names(self) -> list[str]:
        """Names of the sampled knobs."""
        return [p.name for p in self.params]

    @property
    def knob_names(self) -> list[str]:
        """Names of every knob a study may fix."""
        return [p.name for p in self.declared]

    def extend(self, *params: Param, help: str = "") -> "SearchSpace":
        """A new space with ``params`` appended."""
        return SearchSpace(self.declared + params, help=help or self.help)

    def validate_overrides(self, fixed: dict[str, Any], ranges: dict[str, Any]) -> dict[str, Any]:
        """Raise :class:`StudyError` for unknown names or bad values; return the fixed values as declared types."""
        by_name = {p.name: p for p in self.declared}
        for section, values in (("fixed", fixed), ("ranges", ranges)):
            unknown = sorted(set(values) - set(by_name))
            if unknown:
                raise StudyError(f"{section}: unknown parameter(s) {unknown}; the space has {self.knob_names}")
        both = sorted(set(fixed) & set(ranges))
        if both:
            raise StudyError(f"{both} are both fixed and given a range")
        coerced = {name: by_name[name].check_fixed(value) for name, value in fixed.items()}
        # Rules across knobs of one plug-in (e.g. the exact solver needs a small subset), on what is fixed.
        for owner in {p.owner for p in self.declared if p.owner is not None and p.name in coerced}:
            owner.from_config({k: v for k, v in coerced.items() if k in owner.model_fields}, where="fixed")
        for name, value in ranges.items():
            by_name[name].narrowed(value)
        return coerced

    def define_by_run(self, fixed: dict[str, Any] | None = None, ranges: dict[str, Any] | None = None
                      ) -> "DefineByRun":
        """The Optuna define-by-run function; fixed values come back as constants (not suggested)."""
        fixed, ranges = dict(fixed or {}), dict(ranges or {})
        fixed = self.validate_overrides(fixed, ranges)
        params = tuple(p.narrowed(ranges[p.name]) if p.name in ranges else p for p in self.declared)
        # Registry-backed choices are read now, and owners dropped, so the function pickles as plain values.
        params = tuple(replace(p, choices=tuple(p.options()) if p.kind == "categorical" else None, owner=None)
                       for p in params if p.searchable or p.name in fixed)
        return DefineByRun(params, fixed)

    def sample(self, seed: int = 0, fixed: dict[str, Any] | None = None) -> dict[str, Any]:
        """One full configuration drawn by Optuna (for tests and direct calls)."""
        import optuna

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
