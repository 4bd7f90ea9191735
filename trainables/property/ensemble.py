"""An ensemble of saved property models (any mix of language models and D-MPNNs) served as one.

The prediction is the members' mean; the spread (standard deviation across members) comes back as
an ``uncertainty`` column, so a chemist sees where the members disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

__all__ = ["EnsemblePredictor", "EnsemblePyfunc", "load_member"]


def load_member(path: str | Path) -> Any:
    """A saved ``model/`` folder's predictor: D-MPNN or language model."""
    from trainables.property.dmpnn import DmpnnPredictor
    from trainables.property.serving import PropertyPredictor

    return DmpnnPredictor.load(path) if DmpnnPredictor.is_dmpnn(path) else PropertyPredictor.load(path)


class EnsemblePredictor:
    """Mean and spread of several predictors' ``prediction`` columns."""

    def __init__(self, members: list[Any]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = members

    def predict(self, smiles: list[str]) -> pd.DataFrame:
        """Columns ``smiles, canonical_smiles, prediction, uncertainty, n_members, error``."""
        outs = [m.predict(list(smiles)) for m in self.members]
        preds = np.stack([o["prediction"].to_numpy(dtype=float) for o in outs])
        frame = outs[0][["smiles", "canonical_smiles"]].copy()
        frame["prediction"] = preds.mean(axis=0)
        frame["uncertainty"] = preds.std(axis=0) if len(outs) > 1 else np.zeros(len(frame))
        frame["n_members"] = len(outs)
        frame["error"] = outs[0]["error"]
        return frame


class EnsemblePyfunc(mlflow.pyfunc.PythonModel):
    """MLflow model over artifacts ``member0``, ``member1``, ... (each a saved ``model/`` folder)."""

    def load_context(self, context) -> None:  # noqa: ANN001 - MLflow's signature
        keys = sorted((k for k in context.artifacts if k.startswith("member")), key=lambda k: int(k[6:]))
        self.predictor = EnsemblePredictor([load_member(context.artifacts[k]) for k in keys])

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - MLflow's signature
        from trainables.serving import input_column, json_safe

        return json_safe(self.predictor.predict(input_column(model_input, "smiles")))  # bad rows: null, not NaN
