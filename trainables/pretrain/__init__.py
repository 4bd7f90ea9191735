"""Pretraining: masked-language modelling (encoders) and denoising (seq2seq) on a SMILES corpus.

The ``corpus`` dataset and the ``pretrain`` task are declared in their registries and imported on first
use; the knobs module needs no torch (the ``pretrain`` search space reads it).
"""
