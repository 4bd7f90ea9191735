"""The ``retro`` space: the retro task's knobs (treatment, gamma, optimiser, augmentation) and each treatment's."""

from __future__ import annotations

from search_spaces.base import SPACES, SearchSpace, params_of, plugin_params
from trainables.retro.task import RetroKnobs
from trainables.retro.treatments import TREATMENT_CHOICES, treatment_knobs

__all__ = ["RETRO"]

RETRO = SearchSpace(
    tuple(params_of(RetroKnobs) + plugin_params("treatment", TREATMENT_CHOICES, treatment_knobs)),
    help="retrosynthesis: treatment, gamma, LoRA rank, learning rate, label smoothing, augmentation, batch size",
)
SPACES.register("retro", RETRO, help=RETRO.help)
