"""An ensemble of saved property models (any mix of language models and D-MPNNs) served as one.

The prediction is the members' weighted mean; the weighted spread (standard deviation across members
under the same weights) comes back as an ``uncertainty`` column, so a chemist sees where the members
disagree. The weights are fitted on the valid split only (:func:`fit_weights`: least squares on the
simplex); an ensemble without fitted weights (``promote``'s seed refits) weighs its members equally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

__all__ = ["EnsemblePredictor", "EnsemblePyfunc", "load_member", "fit_weights", "weighted_mean_spread", "WEIGHTS_FILE"]

WEIGHTS_FILE = "weights.json"


def fit_weights(preds: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Member weights [M] minimizing the squared error of ``w @ preds`` [M, N] to ``targets`` [N], with
    ``w >= 0`` and ``sum(w) == 1`` (a convex combination: stays within the members' range, no extrapolating
    stacking). Solved with SLSQP from equal weights; call it with the *valid* predictions only."""
    from scipy.optimize import minimize

    preds, targets = np.asarray(preds, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if preds.ndim != 2 or preds.shape[1] != len(targets) or not len(targets):
        raise ValueError(f"fit_weights: predictions {preds.shape} do not match {len(targets)} targets")
    m = len(preds)
    if m == 1:
        return np.ones(1)
    scale = float(np.mean((preds - targets) ** 2)) or 1.0  # a well-conditioned objective

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        r = w @ preds - targets
        return float(r @ r) / len(targets) / scale, 2 * (preds @ r) / len(targets) / scale

    result = minimize(loss, np.full(m, 1 / m), jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * m,
                      constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(m)}])
    w = np.clip(result.x, 0.0, None)
    return w / w.sum()


def weighted_mean_spread(preds: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and weighted standard deviation over members (axis 0) of ``preds`` [M, N]."""
    w = np.full(len(preds), 1 / len(preds)) if weights is None else np.asarray(weights, dtype=np.float64)
    mean = w @ preds
    return mean, np.sqrt(np.clip(w @ (preds - mean) ** 2, 0.0, None))


def load_member(path: str | Path) -> Any:
    """A saved ``model/`` folder's predictor: D-MPNN or language model."""
    from trainables.property.dmpnn import DmpnnPredictor
    from trainables.property.serving import PropertyPredictor

    return DmpnnPredictor.load(path) if DmpnnPredictor.is_dmpnn(path) else PropertyPredictor.load(path)


class EnsemblePredictor:
    """Weighted mean and spread of several predictors' ``prediction`` columns (equal weights by default)."""

    def __init__(self, members: list[Any], weights: list[float] | None = None) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if weights is not None and (len(weights) != len(members) or min(weights) < 0 or abs(sum(weights) - 1) > 1e-6):
            raise ValueError(f"ensemble weights {weights}: need {len(members)} non-negative weights summing to 1")
        self.members, self.weights = members, weights

    def predict(self, smiles: list[str]) -> pd.DataFrame:
        """Columns ``smiles, canonical_smiles, prediction, uncertainty, n_members, error``."""
        outs = [m.predict(list(smiles)) for m in self.members]
        preds = np.stack([o["prediction"].to_numpy(dtype=float) for o in outs])
        frame = outs[0][["smiles", "canonical_smiles"]].copy()
        frame["prediction"], frame["uncertainty"] = weighted_mean_spread(preds, self.weights)
        frame["n_members"] = len(outs)
        frame["error"] = outs[0]["error"]
        return frame


class EnsemblePyfunc(mlflow.pyfunc.PythonModel):
    """MLflow model over artifacts ``member0``, ``member1``, ... (each a saved ``model/`` folder) and, when
    fitted, ``weights`` (a JSON list in member order)."""

    def load_context(self, context) -> None:  # noqa: ANN001 - MLflow's signature
        import json

        keys = sorted((k for k in context.artifacts if k.startswith("member")), key=lambda k: int(k[6:]))
        weights = json.loads(Path(context.artifacts["weights"]).read_text()) if "weights" in context.artifacts else None
        self.predictor = EnsemblePredictor([load_member(context.artifacts[k]) for k in keys], weights)

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - MLflow's signature
        from trainables.serving import input_column, json_safe

        return json_safe(self.predictor.predict(input_column(model_input, "smiles")))  # bad rows: null, not NaN
