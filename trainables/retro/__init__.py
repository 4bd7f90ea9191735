"""Retrosynthesis: seq2seq fine-tuning (product -> reactants) with treatments and teacher-label mixing.

The ``uspto50k`` and ``reactions-csv`` datasets, the seq2seq models (in ``BACKBONES``) and the
``retro`` task are declared in their registries and imported on first use; importing this package
is cheap (the knobs and treatments modules need no torch), and its names below load on access.
"""

from typing import Any

__all__ = ["RetroOptions", "RetroTrainer", "prepare_retro", "retro_pyfunc", "train_retro"]


def __getattr__(name: str) -> Any:  # PEP 562: the trainer (torch, transformers) only when asked for
    if name in __all__:
        from trainables.retro import task

        return getattr(task, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
