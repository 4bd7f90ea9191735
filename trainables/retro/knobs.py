"""Knobs of the ``retro`` task, declared apart from its trainer (``trainables.retro.task``).

The ``retro`` search space and ``chemtune list spaces`` read them without importing torch or
transformers; the trainer reads a trial's values with the same model.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from trainables.knobs import KnobSet, Search
from trainables.retro.treatments import TREATMENT_CHOICES, validate_treatment

__all__ = ["RetroKnobs", "DEFAULTS"]


class RetroKnobs(KnobSet):
    """Knobs of the ``retro`` task (a treatment's own knobs are declared with its parts, in ``treatments``)."""

    treatment: Annotated[str, Search(choices=TREATMENT_CHOICES)] = Field(
        "full", description="which parts train: the paper's 15 rows (fix_*, lora_*, mlp_* combined with '+', or full)")
    gamma: Annotated[float, Search(0.0, 1.0, step=0.1)] = Field(
        0.0, ge=0, le=1, description="share of ALL train labels replaced by the teacher's (the report's definition; "
                                  "refused when the teacher covers fewer rows)")
    lr: Annotated[float, Search(1e-5, 3e-3, log=True)] = Field(
        5e-4, gt=0, description="peak learning rate (AdamW, one-cycle schedule)")
    label_smoothing: Annotated[float, Search(0.0, 0.2)] = Field(
        0.0, ge=0, lt=1, description="label smoothing of the token cross-entropy")
    augment_prob: Annotated[float, Search(0.0, 1.0)] = Field(
        0.0, ge=0, le=1, description="share of train products fed as randomized SMILES each epoch")
    batch_size: Annotated[int, Search(choices=(16, 32, 64, 128))] = Field(64, ge=1, description="reactions per step")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup: float = Field(0.1, ge=0, lt=1, description="share of the one-cycle schedule spent warming up")
    schedule: Literal["one_cycle", "cyclic"] = Field(
        "one_cycle", description="one_cycle (OneCycleLR, Chemformer's 'cycle') or cyclic (CyclicLR triangles "
                                 "between lr/10 and lr, lr_cycles of them over the run)")
    lr_cycles: int = Field(4, ge=1, description="cyclic schedule only: up-and-down triangles over the run")
    train_embeddings: bool = Field(
        True, description="rows that freeze a stack or add LoRA: the shared token embedding, output projection and "
                          "learned positions keep training (Chemformer's way; the report does not say)")
    grad_accum: int = Field(1, ge=1, description="batches per optimizer step (gradient accumulation)")
    patience: int = Field(0, ge=0, description="stop after this many epochs without a better validation "
                                               "metric (0: run every epoch); test is scored on the best epoch")

    @field_validator("treatment")
    @classmethod
    def _treatment(cls, v: str) -> str:
        validate_treatment(v)
        return v


DEFAULTS: dict[str, Any] = RetroKnobs.defaults()
