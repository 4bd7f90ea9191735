"""The ``pretrain`` space: the pretrain task's knobs (masking share, span length, lr, warmup, batch, enumeration)."""

from __future__ import annotations

from search_spaces.base import SPACES, SearchSpace, params_of
from trainables.pretrain.knobs import PretrainKnobs

__all__ = ["PRETRAIN"]

PRETRAIN = SearchSpace(
    tuple(params_of(PretrainKnobs)),
    help="pretraining: masking share, span length, learning rate, warmup, batch size, SMILES enumeration",
)
SPACES.register("pretrain", PRETRAIN, help=PRETRAIN.help)
