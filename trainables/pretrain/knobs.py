"""Knobs of the ``pretrain`` task, declared apart from its trainer (``trainables.pretrain.task``).

The ``pretrain`` search space and ``chemtune list spaces`` read them without importing torch; the trainer
reads a trial's values with the same model. Epochs are the study's ``max_epochs`` (ASHA's ``max_t``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from trainables.knobs import KnobSet, Search

__all__ = ["PretrainKnobs", "DEFAULTS"]


class PretrainKnobs(KnobSet):
    """Knobs of the ``pretrain`` task (both objectives; ``span_length`` is read by denoising only)."""

    batch_size: Annotated[int, Search(choices=(32, 64, 128, 256))] = Field(64, ge=1, description="molecules per step")
    mask_prob: Annotated[float, Search(0.05, 0.3)] = Field(
        0.15, gt=0, lt=1, description="masking share: MLM masks this share of tokens (BERT 80/10/10); denoising "
                                       "starts a masked span at this share of positions (Chemformer's span scheme)")
    span_length: Annotated[float, Search(1.0, 5.0)] = Field(
        3.0, ge=0, description="denoising: mean (Poisson lambda) of a masked span's length; each span becomes one mask")
    lr: Annotated[float, Search(1e-5, 3e-3, log=True)] = Field(
        5e-4, gt=0, description="peak learning rate (AdamW, linear warmup and decay)")
    warmup_ratio: Annotated[float, Search(0.0, 0.2)] = Field(
        0.05, ge=0, lt=1, description="share of the optimizer steps with linear learning-rate warmup")
    enumerate_prob: Annotated[float, Search(0.0, 1.0)] = Field(
        0.0, ge=0, le=1, description="share of train molecules fed as RDKit randomized SMILES each epoch "
                                     "(SMILES enumeration; the denoising target is the same randomized SMILES)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    grad_accum: int = Field(1, ge=1, description="batches per optimizer step (gradient accumulation)")
    patience: int = Field(0, ge=0, description="stop after this many epochs without a better validation "
                                               "metric (0: run every epoch); test is scored on the best epoch")


DEFAULTS: dict[str, Any] = PretrainKnobs.defaults()
