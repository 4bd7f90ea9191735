"""Peer baselines of a property study, fitted once on the study's own splits (the same hashes).

A study should beat what a chemist already runs; these are those tools, with their usual settings:

- ``random_forest``: scikit-learn random forest (500 trees) on Morgan count fingerprints
  (radius 2, 2048 bits) concatenated with RDKit's 2D descriptors, less those the dataset's label is
  computed from (``Dataset.label_descriptors``: nci-logp's label *is* the ``MolLogP`` descriptor).
- ``chemprop``: chemprop 2.3's D-MPNN with ``chemprop train``'s defaults (50 epochs, Noam-like
  schedule, the best validation-loss epoch), trained by Lightning exactly as its CLI does.

Ray-free; ``studies.baselines`` logs each as an MLflow run of the study.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rdkit import Chem
from rdkit.Chem import Descriptors, rdFingerprintGenerator

from trainables.models.chemprop_api import import_chemprop
from trainables.property.data import PropertyData, regression_metrics
from trainables.registry import Registry

__all__ = ["BASELINES", "BaselineResult", "descriptor_names", "featurize", "fit_random_forest", "fit_chemprop"]


@dataclass
class BaselineResult:
    """A fitted baseline: its settings, valid/test metrics and predictions, and its wall time."""

    name: str
    params: dict[str, Any]
    metrics: dict[str, float]
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    wall_s: float = 0.0


def descriptor_names(exclude: Collection[str] = ()) -> list[str]:
    """RDKit's 2D descriptor names in ``CalcMolDescriptors`` order, less ``exclude`` (each must be one of them)."""
    names = [name for name, _ in Descriptors.descList]
    unknown = sorted(set(exclude) - set(names))
    if unknown:
        raise ValueError(f"excluded descriptors {unknown} are not RDKit 2D descriptors")
    return [name for name in names if name not in set(exclude)]


def featurize(smiles: list[str], radius: int = 2, n_bits: int = 2048, exclude: Collection[str] = (),
              parts: Collection[str] = ("morgan", "descriptors")) -> np.ndarray:
    """Morgan count fingerprint + RDKit 2D descriptors (less ``exclude``), one row per (already canonical) SMILES.

    ``parts`` picks either or both blocks (the hybrid heads of ``trainables.property.features`` use one);
    the order is always fingerprint first. Descriptors RDKit cannot compute for a molecule come back NaN
    (or overflow); they are set to 0 so the forest still sees the fingerprint, rather than dropping the molecule.
    """
    unknown = set(parts) - {"morgan", "descriptors"}
    if unknown or not parts:
        raise ValueError(f"featurize parts {sorted(parts)}: choose morgan and/or descriptors")
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    names = descriptor_names(exclude)
    rows = []
    for s in smiles:
        mol = Chem.MolFromSmiles(s)
        if mol is None:  # the study's data report already excluded invalid SMILES
            raise ValueError(f"invalid SMILES {s!r} reached the baseline featurizer")
        row = []
        if "morgan" in parts:
            row.append(generator.GetCountFingerprintAsNumPy(mol).astype(np.float64))
        if "descriptors" in parts:
            values = Descriptors.CalcMolDescriptors(mol)
            row.append(np.array([values[name] for name in names], dtype=np.float64))
        rows.append(np.concatenate(row))
    x = np.asarray(rows, dtype=np.float64).reshape(len(smiles), -1)
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(x, -1e9, 1e9).astype(np.float32)


def _metrics(data: PropertyData, pred: dict[str, np.ndarray]) -> dict[str, float]:
    out: dict[str, float] = {}
    for split, p in pred.items():
        out.update({f"{split}_{k}": v for k, v in regression_metrics(getattr(data, split).targets, p).items()})
    return out


def fit_random_forest(data: PropertyData, seed: int = 0, n_estimators: int = 500, n_jobs: int = 1,
                      exclude_descriptors: Collection[str] = ()) -> BaselineResult:
    """Random forest on fingerprints + descriptors (less ``exclude_descriptors``: those the label is
    computed from), fitted on train, scored on valid and test."""
    from sklearn.ensemble import RandomForestRegressor

    tic = time.perf_counter()
    model = RandomForestRegressor(n_estimators=n_estimators, random_state=seed, n_jobs=n_jobs)
    model.fit(featurize(data.train.smiles, exclude=exclude_descriptors), data.train.targets)
    pred = {split: model.predict(featurize(getattr(data, split).smiles, exclude=exclude_descriptors))
            for split in ("valid", "test")}
    params = {"n_estimators": n_estimators, "features": "morgan_count_r2_2048+rdkit_2d", "seed": seed,
              "excluded_descriptors": ",".join(exclude_descriptors) or "none"}
    return BaselineResult("random_forest", params, _metrics(data, pred), pred, time.perf_counter() - tic)


def fit_chemprop(data: PropertyData, seed: int = 0, max_epochs: int = 50, batch_size: int = 64) -> BaselineResult:
    """chemprop's D-MPNN with its CLI defaults; the checkpoint of the best validation loss is scored."""
    cp = import_chemprop("baselines.chemprop")
    from lightning import pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from trainables.models.dmpnn import DmpnnConfig, build_mpnn, molecule_dataset, predict_mpnn

    tic = time.perf_counter()
    pl.seed_everything(seed, verbose=False)
    y = data.train.targets
    mean, std = float(y.mean()), float(y.std()) or 1.0
    sets = {split: molecule_dataset(getattr(data, split).smiles, getattr(data, split).targets, mean, std)
            for split in ("train", "valid", "test")}
    model = build_mpnn(DmpnnConfig(), mean, std)
    train = cp.data.build_dataloader(sets["train"], batch_size=batch_size, num_workers=0, seed=seed)
    valid = cp.data.build_dataloader(sets["valid"], batch_size=batch_size, num_workers=0, shuffle=False)
    with tempfile.TemporaryDirectory(prefix="chemtune-chemprop-") as tmp:
        best = ModelCheckpoint(dirpath=tmp, filename="best", monitor="val_loss", mode="min")
        trainer = pl.Trainer(
            logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
            max_epochs=max_epochs, callbacks=[best], deterministic=False,
        )
        trainer.fit(model, train, valid)
        model = cp.models.MPNN.load_from_checkpoint(best.best_model_path, map_location="cpu")

    pred = {split: predict_mpnn(model, sets[split], batch_size) for split in ("valid", "test")}
    params = {**DmpnnConfig().to_dict(), "max_epochs": max_epochs, "batch_size": batch_size, "seed": seed,
              "checkpoint": "best val_loss", "best_val_loss": float(best.best_model_score), "chemprop": cp.__version__}
    return BaselineResult("chemprop", params, _metrics(data, pred), pred, time.perf_counter() - tic)


BASELINES: Registry[Callable[..., BaselineResult]] = Registry("baseline")
BASELINES.register("random_forest", fit_random_forest,
                   help="random forest, 500 trees, Morgan count fingerprints (r=2, 2048) + RDKit 2D descriptors "
                        "(less the dataset's label descriptors)")
BASELINES.register("chemprop", fit_chemprop, help="chemprop 2.3 D-MPNN, `chemprop train` defaults (needs chemtune[chemprop])")
