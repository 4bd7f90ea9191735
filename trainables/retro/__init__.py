"""Retrosynthesis: seq2seq fine-tuning (product -> reactants) with treatments and teacher-label mixing.

Importing this package registers the ``uspto50k`` and ``reactions-csv`` datasets, the seq2seq
models (in ``BACKBONES``), the treatments and the ``retro`` task.
"""

from trainables.retro import data as _data  # noqa: F401  (registers datasets)
from trainables.retro import models as _models  # noqa: F401  (registers seq2seq backbones)
from trainables.retro.task import RetroOptions, RetroTrainer, prepare_retro, retro_pyfunc, train_retro

__all__ = ["RetroOptions", "RetroTrainer", "prepare_retro", "retro_pyfunc", "train_retro"]
