"""Knobs of the ``property`` task, declared apart from its trainer (``trainables.property.task``).

The search spaces and ``chemtune list spaces`` read these models without importing torch or
transformers; the trainer reads a trial's values with the same models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from trainables.knobs import KnobSet, Search
from trainables.methods import METHODS
from trainables.selection.base import SELECTORS

__all__ = ["PropertyKnobs", "LMExtraKnobs", "ArchKnobs", "DEFAULTS", "LM_EXTRA_DEFAULTS", "HEAD_FEATURES", "HeadFeatures"]

# a hybrid head's molecular features (trainables.property.features computes them; declared here, RDKit-free)
HeadFeatures = Literal["none", "descriptors", "morgan", "both"]
HEAD_FEATURES: tuple[str, ...] = ("none", "descriptors", "morgan", "both")


class PropertyKnobs(KnobSet):
    """Knobs of the ``property`` task (the method's and the selector's own knobs are declared with them)."""

    method: Annotated[str, Search(choices=METHODS.names)] = Field("full", description="fine-tuning method")
    lr: Annotated[float, Search(1e-5, 3e-3, log=True)] = Field(
        5e-5, gt=0, description="peak learning rate (AdamW, linear warmup/decay)")
    weight_decay: Annotated[float, Search(0.0, 0.1)] = Field(0.01, ge=0, description="AdamW weight decay")
    batch_size: Annotated[int, Search(choices=(16, 32, 64))] = Field(32, ge=1, description="molecules per step")
    head_dropout: Annotated[float, Search(0.0, 0.5)] = Field(0.1, ge=0, lt=1, description="dropout in the regression head")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="share of the steps with linear learning-rate warmup")
    optimizer: Literal["adamw", "adam"] = Field(
        "adamw", description="adamw (decoupled weight decay) or adam (the property report's optimizer; no decay)")
    schedule: Literal["linear", "constant"] = Field(
        "linear", description="learning rate over the run: linear warmup/decay, or constant (the report's Adam runs)")
    grad_accum: int = Field(1, ge=1, description="batches per optimizer step (gradient accumulation)")
    selection: Annotated[str, Search(choices=SELECTORS.names)] = Field(
        "none", description="data-selection method (none: the train split as is)")
    patience: int = Field(0, ge=0, description="stop after this many epochs without a better validation "
                                               "metric (0: run every epoch); test is scored on the best epoch")

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        METHODS.check(v)
        return v

    @field_validator("selection")
    @classmethod
    def _selection(cls, v: str) -> str:
        SELECTORS.check(v)
        return v


DEFAULTS: dict[str, Any] = PropertyKnobs.defaults()


class LMExtraKnobs(KnobSet):
    """Language-model knobs beyond the ``property`` space (spaces ``property_plus`` and ``property_mix``):
    SMILES enumeration (trainables.property.augment) and the regression head. Off / as before unless searched or fixed."""

    augment_copies: Annotated[int, Search(0, 4)] = Field(
        0, ge=0, description="randomized SMILES per molecule added each epoch (0: none)")
    tta: Annotated[int, Search(1, 8)] = Field(
        1, ge=1, description="test-time augmentation: mean over this many SMILES, canonical included")
    pooling: Annotated[Literal["mean", "cls"], Search(choices=("mean", "cls"))] = Field(
        "mean", description="token states -> molecule embedding")
    head_hidden: Annotated[int, Search(choices=(128, 256, 512))] = Field(
        256, ge=1, description="width of the regression head's hidden layer")
    head_lr_mult: Annotated[float, Search(1.0, 100.0, log=True)] = Field(
        1.0, gt=0, description="head learning rate = lr x this")
    head_features: Annotated[HeadFeatures, Search(choices=HEAD_FEATURES)] = Field(
        "none", description="hybrid head: molecular features concatenated with the pooled embedding (RDKit 2D "
                            "descriptors, Morgan counts r=2 2048 bits, or both; normalized on train; none: "
                            "the embedding alone)")

    @field_validator("pooling", mode="before")
    @classmethod
    def _pooling(cls, v: Any) -> Any:
        if v not in ("mean", "cls"):  # the value named, as the head names it (trainables.models.regression)
            raise ValueError(f"pooling {v!r}: choose mean or cls")
        return v


class ArchKnobs(KnobSet):
    """Which model family a property trial trains (space ``property_mix``; ``dmpnn`` fixes it)."""

    arch: Annotated[Literal["lm", "dmpnn"], Search(choices=("lm", "dmpnn"))] = Field(
        "lm", description="model family: the study's language model or chemprop's D-MPNN")


LM_EXTRA_DEFAULTS: dict[str, Any] = LMExtraKnobs.defaults()
