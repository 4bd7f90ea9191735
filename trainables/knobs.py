"""Knobs: every plug-in declares its hyperparameters once, as a pydantic model (as peft's configs do).

A field's type and ``Field`` constraints say what a study may *fix* it to; an optional :class:`Search`
in its ``Annotated`` metadata says how a search space *samples* it (range, log, step, choices) and which
other knobs it needs (``when``). Search spaces (``search_spaces/``) are derived from these models, the
trainers' defaults are their defaults, and a trial reads its typed knobs back with :meth:`KnobSet.from_config`.

    class LoraKnobs(KnobSet):
        lora_r: Annotated[int, Search(2, 64, log=True)] = Field(8, ge=1, description="LoRA rank")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from trainables.errors import StudyError

__all__ = ["Search", "KnobSet", "search_of", "format_errors"]

K = TypeVar("K", bound="KnobSet")


@dataclass(frozen=True, eq=True)
class Search:
    """How a knob is searched (put it in the field's ``Annotated`` metadata).

    Attributes:
        low, high: Bounds of a number (the sampled range; the field's own bounds may be wider).
        log: Sample on a log scale.
        step: Grid step.
        choices: Values of a categorical (a callable, e.g. a registry's ``names``, is read at use).
        when: ``{knob: allowed values}`` of the same plug-in; the knob exists only when all hold.
    """

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None
    when: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def __hash__(self) -> int:  # metadata may be hashed; ``when`` is a dict
        return hash((self.low, self.high, self.log, self.step, id(self.choices), tuple(self.when)))


def search_of(model: type[BaseModel], name: str) -> Search | None:
    """The :class:`Search` declared for knob ``name`` of ``model`` (``None``: fixable, never sampled)."""
    return next((m for m in model.model_fields[name].metadata if isinstance(m, Search)), None)


def format_errors(err: ValidationError, prefix: str) -> str:
    """pydantic errors as ``prefix.key: message`` lines (``prefix: message`` for whole-model rules)."""
    lines = []
    for e in err.errors():
        where = ".".join([prefix, *map(str, e["loc"])])
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {msg}")
    return "; ".join(lines)


class KnobSet(BaseModel):
    """Base of a plug-in's knobs. Read from a trial config, whose other keys belong to other plug-ins."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def from_config(cls: type[K], config: Mapping[str, Any], where: str = "config") -> K:
        """Validate this plug-in's knobs in ``config``; raise :class:`StudyError` naming each bad key."""
        try:
            return cls.model_validate(dict(config))
        except ValidationError as err:
            raise StudyError(format_errors(err, where)) from None

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The declared defaults (what a trial uses for a knob the study neither searches nor fixes)."""
        return cls().model_dump()

    @classmethod
    def help(cls, name: str) -> str:
        return cls.model_fields[name].description or ""
