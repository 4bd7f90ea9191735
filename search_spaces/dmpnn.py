"""Spaces with chemprop's D-MPNN: ``dmpnn`` alone, and ``property_mix`` (language models and D-MPNNs).

``arch`` picks the model family per trial; each family's knobs exist only for its trials, so Optuna
and ASHA tune a mixed study like any other (``fixed: {arch: dmpnn}`` narrows a mix to one family).
"""

from __future__ import annotations

from dataclasses import replace

from search_spaces.base import SPACES, Param, SearchSpace
from search_spaces.property import PROPERTY
from trainables.models.dmpnn import AGGREGATIONS

__all__ = ["DMPNN", "PROPERTY_MIX", "PROPERTY_PLUS", "LM_EXTRA", "dmpnn_params"]

# Language-model knobs beyond the ``property`` space (kept out of it so existing studies sample as before).
LM_EXTRA = (
    Param("augment_copies", "int", 0, 4, help="randomized SMILES per molecule added each epoch (0: none)"),
    Param("tta", "int", 1, 8, help="test-time augmentation: mean over this many SMILES, canonical included"),
    Param("pooling", "categorical", choices=("mean", "cls"), help="token states -> molecule embedding"),
    Param("head_hidden", "categorical", choices=(128, 256, 512), help="width of the regression head's hidden layer"),
    Param("head_lr_mult", "float", 1.0, 100.0, log=True, help="head learning rate = lr x this"),
)


def dmpnn_params(when: dict | None = None) -> tuple[Param, ...]:
    """chemprop's knobs (``dmpnn_*`` keys of the trial config; unset keys keep chemprop's defaults)."""
    w = dict(when or {})
    return (
        Param("dmpnn_depth", "int", 2, 6, when=w, help="message-passing steps (chemprop default 3)"),
        Param("dmpnn_hidden_size", "categorical", choices=(200, 300, 600, 900), when=w, help="message hidden size (300)"),
        Param("dmpnn_dropout", "float", 0.0, 0.4, when=w, help="dropout in message passing and the FFN (0)"),
        Param("dmpnn_ffn_num_layers", "int", 1, 3, when=w, help="FFN layers (1)"),
        Param("dmpnn_ffn_hidden_size", "categorical", choices=(300, 600, 1200), when=w, help="FFN width (300)"),
        Param("dmpnn_aggregation", "categorical", choices=AGGREGATIONS, when=w, help="atoms -> molecule (norm)"),
        Param("dmpnn_lr", "float", 1e-4, 3e-3, log=True, when=w, help="peak LR of the Noam-like schedule (1e-3)"),
        Param("dmpnn_batch_size", "categorical", choices=(32, 64), when=w, help="molecules per step (64)"),
    )


DMPNN = SearchSpace(
    (Param("arch", "categorical", choices=("dmpnn",), help="model family"), *dmpnn_params()),
    help="chemprop D-MPNN (needs chemtune[chemprop]): depth, hidden size, dropout, FFN, aggregation, lr, batch size",
)
PROPERTY_MIX = SearchSpace(
    (
        Param("arch", "categorical", choices=("lm", "dmpnn"), help="model family: the study's language model or chemprop's D-MPNN"),
        *(replace(p, when={"arch": ["lm"], **p.when}) for p in PROPERTY.params + LM_EXTRA),
        *dmpnn_params({"arch": ["dmpnn"]}),
    ),
    help="language model (property knobs) or chemprop D-MPNN (dmpnn knobs), chosen per trial",
)
PROPERTY_PLUS = PROPERTY.extend(*LM_EXTRA, help="property knobs + SMILES enumeration (augment_copies, tta) + head knobs (pooling, head_hidden, head_lr_mult)")
SPACES.register("dmpnn", DMPNN, help=DMPNN.help)
SPACES.register("property_plus", PROPERTY_PLUS, help=PROPERTY_PLUS.help)
SPACES.register("property_mix", PROPERTY_MIX, help=PROPERTY_MIX.help)
