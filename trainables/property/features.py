"""Molecular features for hybrid regression heads: RDKit 2D descriptors and/or Morgan counts, normalized.

The featurization is the forest baseline's (:func:`trainables.property.baselines.featurize`); the
normalization statistics (mean, std per column) come from the train split only and are saved in the
model folder (``head_features.json``), so a served model computes the same features from SMILES.
Descriptors a dataset's label is computed from (``Dataset.label_descriptors``) are left out.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from trainables.data.chem import canonicalize
from trainables.property.baselines import descriptor_names, featurize
from trainables.property.knobs import HEAD_FEATURES, HeadFeatures

__all__ = ["HEAD_FEATURES", "HeadFeatures", "HeadFeaturizer", "FEATURES_FILE"]

FEATURES_FILE = "head_features.json"
_PARTS = {"descriptors": ("descriptors",), "morgan": ("morgan",), "both": ("morgan", "descriptors")}
N_BITS = 2048
CLIP = 10.0  # z-scores beyond this (a heavy-tailed descriptor off the train range) are clipped


@dataclass
class HeadFeaturizer:
    """SMILES -> normalized feature rows [N, F] (float32); fitted on train SMILES by :meth:`fit`."""

    kind: str
    exclude: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in _PARTS:
            raise ValueError(f"head_features {self.kind!r}: choose one of {', '.join(HEAD_FEATURES)}")
        self._cache: dict[str, np.ndarray] = {}

    @property
    def size(self) -> int:
        return len(self.names)

    def raw(self, smiles: Sequence[str]) -> np.ndarray:
        """Unnormalized features of canonical SMILES (the baseline's featurizer, this head's parts)."""
        return featurize(list(smiles), n_bits=N_BITS, exclude=self.exclude, parts=_PARTS[self.kind])

    @classmethod
    def fit(cls, kind: str, train_smiles: Sequence[str], exclude: Collection[str] = ()) -> "HeadFeaturizer":
        """Column means and standard deviations of the train molecules (constant columns: std 1)."""
        out = cls(kind, sorted(exclude))
        x = out.raw(train_smiles).astype(np.float64)
        std = x.std(0)
        out.mean, out.std = x.mean(0).tolist(), np.where(std > 1e-8, std, 1.0).tolist()
        names = []
        if "morgan" in _PARTS[kind]:
            names += [f"morgan_count_{i}" for i in range(N_BITS)]
        if "descriptors" in _PARTS[kind]:
            names += descriptor_names(out.exclude)
        out.names = names
        out._cache = {s: row for s, row in zip(train_smiles, out.normalize(x))}
        return out

    def normalize(self, x: np.ndarray) -> np.ndarray:
        z = (x - np.asarray(self.mean)) / np.asarray(self.std)
        return np.clip(z, -CLIP, CLIP).astype(np.float32)

    def __call__(self, smiles: Sequence[str]) -> np.ndarray:
        """Normalized rows of ``smiles`` (any valid form: features of the molecule, so randomized SMILES of
        one molecule get the same row); cached by canonical SMILES."""
        keys = [canonicalize(s) or s for s in smiles]
        todo = sorted({k for k in keys if k not in self._cache})
        if todo:
            self._cache.update(zip(todo, self.normalize(self.raw(todo).astype(np.float64))))
        return np.stack([self._cache[k] for k in keys]) if keys else np.zeros((0, self.size), np.float32)

    def save(self, folder: Path) -> None:
        (folder / FEATURES_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, folder: Path) -> "HeadFeaturizer | None":
        """The saved featurizer of a model folder; None for a plain head (no file)."""
        path = folder / FEATURES_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None
