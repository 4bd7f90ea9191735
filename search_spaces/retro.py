"""The ``retro`` space: the retro task's knobs (treatment, gamma, optimiser, augmentation) and each treatment's."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from search_spaces.base import SPACES, Param, SearchSpace, params_of, plugin_params
from trainables.errors import StudyError
from trainables.retro.knobs import RetroKnobs
from trainables.retro.treatments import all_treatments, treatment_knobs, validate_treatment


@dataclass(frozen=True)
class TreatmentParam(Param):
    """The treatment: searched over the paper's rows, but any valid composition may be fixed or listed."""

    def _check(self, section: str, value: Any) -> None:
        try:
            canonical = validate_treatment(value)
        except StudyError as err:
            raise StudyError(f"{section}.{self.name}: {value!r} is not one of the valid compositions: {err}") from None
        if canonical != value:
            raise StudyError(f"{section}.{self.name}: write {value!r} as {canonical!r}")

    def check_fixed(self, value: Any) -> Any:
        self._check("fixed", value)
        return value

    def narrowed(self, value: Any) -> "Param":
        if not (isinstance(value, (list, tuple)) and value):
            raise StudyError(f"ranges.{self.name}: give a non-empty list of treatments, got {value!r}")
        for v in value:
            self._check("ranges", v)
        return replace(self, choices=tuple(value))


def _params() -> tuple[Param, ...]:
    # A part's knobs (lora_rank, mlp_kind, ...) exist for every valid composition that uses the part.
    task = [TreatmentParam(**vars(p)) if p.name == "treatment" else p for p in params_of(RetroKnobs)]
    return tuple(task + plugin_params("treatment", all_treatments(), treatment_knobs))

__all__ = ["RETRO"]

RETRO = SearchSpace(
    _params(),
    help="retrosynthesis: treatment, gamma, LoRA rank, learning rate, label smoothing, augmentation, batch size",
)
SPACES.register("retro", RETRO, help=RETRO.help)
