"""The ``retro`` space: treatment, teacher-label share gamma, LoRA rank, optimiser and augmentation knobs."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from search_spaces.base import SPACES, Param, SearchSpace
from trainables.errors import StudyError
from trainables.retro.treatments import (
    MLP_KINDS, TREATMENT_CHOICES, all_treatments, lora_treatments, mlp_treatments, validate_treatment,
)


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

    def check_fixed(self, value: Any) -> None:
        self._check("fixed", value)

    def narrowed(self, value: Any) -> "Param":
        if not (isinstance(value, (list, tuple)) and value):
            raise StudyError(f"ranges.{self.name}: give a non-empty list of treatments, got {value!r}")
        for v in value:
            self._check("ranges", v)
        return replace(self, choices=tuple(value))

__all__ = ["RETRO"]

RETRO = SearchSpace(
    (
        TreatmentParam("treatment", "categorical", choices=TREATMENT_CHOICES,
              help="which parts train: the paper's 15 rows (fix_*, lora_*, mlp_* combined with '+', or full)"),
        Param("gamma", "float", 0.0, 1.0, step=0.1, help="share of the usable teacher labels swapped in (trials log gamma_effective over all rows)"),
        Param("lora_rank", "int", 2, 64, log=True, when={"treatment": lora_treatments(tuple(all_treatments()))}, help="LoRA rank"),
        Param("mlp_kind", "categorical", choices=MLP_KINDS, when={"treatment": mlp_treatments(tuple(all_treatments()))},
              help="paper: 3-layer d x d GELU MLP (no residual); bottleneck: zero-initialised residual adapter"),
        Param("lr", "float", 1e-5, 3e-3, log=True, help="peak learning rate (AdamW, one-cycle schedule)"),
        Param("label_smoothing", "float", 0.0, 0.2, help="label smoothing of the token cross-entropy"),
        Param("augment_prob", "float", 0.0, 1.0, help="share of train products fed as randomized SMILES each epoch"),
        Param("batch_size", "categorical", choices=(16, 32, 64, 128), help="reactions per step"),
    ),
    help="retrosynthesis: treatment, gamma, LoRA rank, learning rate, label smoothing, augmentation, batch size",
)
SPACES.register("retro", RETRO, help=RETRO.help)
