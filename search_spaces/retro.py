"""The ``retro`` space: treatment, teacher-label share gamma, LoRA rank, optimiser and augmentation knobs."""

from __future__ import annotations

from search_spaces.base import SPACES, Param, SearchSpace
from trainables.retro.treatments import TREATMENT_CHOICES, lora_treatments

__all__ = ["RETRO"]

RETRO = SearchSpace(
    (
        Param("treatment", "categorical", choices=TREATMENT_CHOICES,
              help="which parts train: full, frozen stacks, MLP adapters, LoRA (combined with '+')"),
        Param("gamma", "float", 0.0, 1.0, step=0.1, help="share of eligible train labels replaced by the teacher's"),
        Param("lora_rank", "int", 2, 64, log=True, when={"treatment": lora_treatments()}, help="LoRA rank"),
        Param("lr", "float", 1e-5, 3e-3, log=True, help="peak learning rate (AdamW, one-cycle schedule)"),
        Param("label_smoothing", "float", 0.0, 0.2, help="label smoothing of the token cross-entropy"),
        Param("augment_prob", "float", 0.0, 1.0, help="share of train products fed as randomized SMILES each epoch"),
        Param("batch_size", "categorical", choices=(16, 32, 64, 128), help="reactions per step"),
    ),
    help="retrosynthesis: treatment, gamma, LoRA rank, learning rate, label smoothing, augmentation, batch size",
)
SPACES.register("retro", RETRO, help=RETRO.help)
