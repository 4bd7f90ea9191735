"""SMILES enumeration for the language models: randomized SMILES as training augmentation and TTA.

A molecule has many valid SMILES; a language model that only ever sees RDKit's canonical one learns
its quirks. ``augment_copies`` adds that many randomized SMILES of every training molecule, drawn
afresh each epoch; ``tta`` predicts each molecule as the mean over ``tta`` SMILES (the canonical
one plus ``tta - 1`` randomized), in valid/test and in the served model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from rdkit import Chem

__all__ = ["randomized_smiles", "augmented_rows", "tta_predict", "save_tta", "load_tta"]


def randomized_smiles(smiles: Sequence[str], copies: int, seed: int) -> list[list[str]]:
    """``copies`` randomized SMILES per molecule (RDKit, seeded: the same seed gives the same strings).

    Molecules with a single SMILES spelling (methane) repeat it; nothing is dropped.
    """
    out = []
    for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s)
        if mol is None:
            raise ValueError(f"invalid SMILES {s!r} (row {i}) reached the augmentation")
        out.append(list(Chem.MolToRandomSmilesVect(mol, copies, randomSeed=(seed * 7919 + i) % (2**31 - 1) + 1))
                   if copies else [])
    return out


def augmented_rows(smiles: Sequence[str], targets: np.ndarray, copies: int, epoch_seed: int
                   ) -> tuple[list[str], np.ndarray]:
    """The extra training rows of one epoch: ``copies`` fresh randomized SMILES per molecule, same label."""
    variants = randomized_smiles(smiles, copies, epoch_seed)
    extra = [v for vs in variants for v in vs]
    labels = np.repeat(np.asarray(targets, dtype=np.float64), [len(vs) for vs in variants])
    return extra, labels


def tta_predict(predict: Callable[[list[str]], np.ndarray], smiles: Sequence[str], k: int, seed: int = 0) -> np.ndarray:
    """Mean prediction over the canonical SMILES and ``k - 1`` randomized ones (``k <= 1``: canonical only)."""
    base = np.asarray(predict(list(smiles)), dtype=np.float64)
    if k <= 1 or not len(smiles):
        return base
    variants = randomized_smiles(smiles, k - 1, seed)
    flat = [v for vs in variants for v in vs]
    extra = np.asarray(predict(flat), dtype=np.float64).reshape(len(smiles), k - 1)
    return (base + extra.sum(axis=1)) / k


def save_tta(path: Path, k: int, seed: int) -> None:
    """Record the trial's TTA in its served ``model/`` folder (absent file: no TTA)."""
    (path / "tta.json").write_text(json.dumps({"k": int(k), "seed": int(seed)}))


def load_tta(path: Path) -> tuple[int, int]:
    """``(k, seed)`` of the served model's TTA; ``(1, 0)`` (canonical only) without ``tta.json``."""
    file = Path(path) / "tta.json"
    if not file.is_file():
        return 1, 0
    meta = json.loads(file.read_text())
    return int(meta["k"]), int(meta["seed"])
