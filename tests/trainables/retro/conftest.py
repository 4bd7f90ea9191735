"""Shared fixtures: a tiny BART on a handful of SMILES."""

from types import SimpleNamespace

import pytest

SMILES = ["CCOC(C)=O", "CC(=O)O.CCO", "Brc1ccccc1", "CC(=O)Nc1ccccc1", "CC(=O)Cl.Nc1ccccc1", "O=C(O)c1ccccc1Cl"]


def model_spec(name="tiny-bart", path=None, max_length=64):
    return SimpleNamespace(name=name, path=path, max_length=max_length, trust_remote_code=False)


@pytest.fixture
def tiny():
    """A fresh (model, tokenizer) pair of the registered tiny-bart."""
    from trainables.retro.models import load_seq2seq

    return load_seq2seq(model_spec(), SMILES, seed=0)
