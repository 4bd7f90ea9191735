"""The property task's prepared data and its metrics, apart from the trainers.

The LM trainer (:mod:`.task`), the D-MPNN trainer (:mod:`.dmpnn`), the peer baselines and the study's
ensemble all read these two names; keeping them here lets each import them at module level
without importing a trainer (no circle between the task and its D-MPNN branch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from trainables.data.tables import MoleculeTable

__all__ = ["PropertyData", "regression_metrics", "METRICS"]

METRICS = ("mse", "rmse", "mae", "r2")


@dataclass
class PropertyData:
    """Splits of canonical, validated molecules. ``pool`` may be empty."""

    train: MoleculeTable
    valid: MoleculeTable
    test: MoleculeTable
    pool: MoleculeTable


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MSE, RMSE, MAE and R2."""
    mse = float(mean_squared_error(y, pred))
    return {"mse": mse, "rmse": math.sqrt(mse), "mae": float(mean_absolute_error(y, pred)), "r2": float(r2_score(y, pred))}
