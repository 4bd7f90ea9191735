"""Spaces with chemprop's D-MPNN: ``dmpnn`` alone, and ``property_mix`` (language models and D-MPNNs).

``arch`` picks the model family per trial; each family's knobs exist only for its trials, so Optuna
and ASHA tune a mixed study like any other (``fixed: {arch: dmpnn}`` narrows a mix to one family).
The knobs are declared with their trainers (``trainables.property.task``, ``trainables.models.dmpnn``).
"""

from __future__ import annotations

from dataclasses import replace

from search_spaces.base import SPACES, Param, SearchSpace, params_of
from search_spaces.property import PROPERTY
from trainables.models.dmpnn import DmpnnKnobs
from trainables.property.knobs import ArchKnobs, LMExtraKnobs

__all__ = ["DMPNN", "PROPERTY_MIX", "PROPERTY_PLUS", "LM_EXTRA", "dmpnn_params"]

# Language-model knobs beyond the ``property`` space (kept out of it so existing studies sample as before).
LM_EXTRA: tuple[Param, ...] = tuple(params_of(LMExtraKnobs))
_ARCH = params_of(ArchKnobs)[0]


def dmpnn_params(when: dict | None = None) -> tuple[Param, ...]:
    """chemprop's knobs (``dmpnn_*`` keys of the trial config), existing only ``when``."""
    return tuple(params_of(DmpnnKnobs, when))


DMPNN = SearchSpace(
    (replace(_ARCH, choices=("dmpnn",), default="dmpnn"), *dmpnn_params()),
    help="chemprop D-MPNN (needs chemtune[chemprop]): depth, hidden size, dropout, FFN, aggregation, lr, batch size",
)
PROPERTY_MIX = SearchSpace(
    (
        _ARCH,
        *(replace(p, when={"arch": ["lm"], **p.when}) for p in PROPERTY.declared + LM_EXTRA),
        *dmpnn_params({"arch": ["dmpnn"]}),
    ),
    help="language model (property knobs) or chemprop D-MPNN (dmpnn knobs), chosen per trial",
)
PROPERTY_PLUS = PROPERTY.extend(*LM_EXTRA, help="property knobs + SMILES enumeration (augment_copies, tta) + head knobs (pooling, head_hidden, head_lr_mult, head_features: hybrid heads)")
SPACES.register("dmpnn", DMPNN, help=DMPNN.help)
SPACES.register("property_plus", PROPERTY_PLUS, help=PROPERTY_PLUS.help)
SPACES.register("property_mix", PROPERTY_MIX, help=PROPERTY_MIX.help)
