"""Serving a fine-tuned property model: a self-contained directory and its MLflow pyfunc wrapper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from trainables.batching import model_device, padded_batches
from trainables.data.chem import canonicalize
from trainables.errors import DataError
from trainables.models.regression import HeadConfig, RegressionModel
from trainables.property.augment import load_tta, tta_predict
from trainables.property.features import HeadFeaturizer
from trainables.serving import input_column, json_safe, row_errors

__all__ = ["save_property_model", "PropertyPredictor", "PropertyPyfunc", "load_saved_model"]


def save_property_model(
    path: Path, backbone: nn.Module, tokenizer: Any, head: nn.Module, config: HeadConfig, trust_remote_code: bool = False,
    featurizer: HeadFeaturizer | None = None,
) -> None:
    """Write ``backbone/`` (transformers format, with tokenizer), ``head.pt`` and ``head.json`` (and, for a hybrid
    head, ``head_features.json``: the feature names and train statistics the served model featurizes with)."""
    path.mkdir(parents=True, exist_ok=True)
    backbone.save_pretrained(path / "backbone")
    tokenizer.save_pretrained(path / "backbone")
    torch.save(head.state_dict(), path / "head.pt")
    config.save(path / "head.json")
    (path / "trust_remote_code").write_text("1" if trust_remote_code else "0")
    if config.n_features:
        if featurizer is None or featurizer.size != config.n_features:
            raise ValueError(f"a hybrid head of {config.n_features} features needs its featurizer to be saved")
        featurizer.save(path)


class PropertyPredictor:
    """Predicts a property from SMILES with a saved model directory."""

    def __init__(self, model: RegressionModel, tokenizer: Any, tta: tuple[int, int] = (1, 0),
                 featurizer: HeadFeaturizer | None = None) -> None:
        self.model, self.tokenizer, self.tta = model.eval(), tokenizer, tta  # (k, seed)
        self.featurizer = featurizer  # a hybrid head computes its molecular features from the SMILES
        if model.config.n_features and (featurizer is None or featurizer.size != model.config.n_features):
            raise DataError(f"the model's head reads {model.config.n_features} molecular features but its folder "
                            f"has no matching {'head_features.json'}")

    @classmethod
    def load(cls, path: str | Path) -> "PropertyPredictor":
        path = Path(path)
        remote = (path / "trust_remote_code").read_text().strip() == "1"
        hf_logging.set_verbosity_error()  # an unused pooler is reported as missing; nothing else is
        backbone = AutoModel.from_pretrained(path / "backbone", trust_remote_code=remote)
        tokenizer = AutoTokenizer.from_pretrained(path / "backbone", trust_remote_code=remote)
        model = RegressionModel(backbone, HeadConfig.load(path / "head.json"))
        model.head.load_state_dict(torch.load(path / "head.pt", map_location="cpu"))
        return cls(model, tokenizer, load_tta(path), HeadFeaturizer.load(path))

    def encode(self, smiles: list[str]) -> list[list[int]]:
        """Token ids of canonical ``smiles``; a hybrid head's features are registered with them, so id-only
        callers (influence from a saved model) can run the model on the ids alone."""
        ids = self.tokenizer(list(smiles), truncation=True, max_length=self.tokenizer.model_max_length)["input_ids"]
        if self.featurizer is not None and ids:
            self.model.features.add(ids, self.featurizer(smiles))
        return ids

    @torch.no_grad()
    def _predict_canonical(self, smiles: list[str], batch_size: int) -> np.ndarray:
        ids = self.tokenizer(smiles, truncation=True, max_length=self.tokenizer.model_max_length)["input_ids"]
        feats = self.featurizer(smiles) if self.featurizer is not None else None
        out = np.empty(len(ids))
        device = model_device(self.model)
        for chunk, input_ids, mask in padded_batches(ids, self.tokenizer.pad_token_id, batch_size, device):
            rows = None if feats is None else torch.as_tensor(feats[chunk]).to(device)
            out[chunk] = self.model.unstandardize(self.model(input_ids, mask, rows).float().cpu().numpy())
        return out

    @torch.no_grad()
    def predict(self, smiles: list[str], batch_size: int = 128) -> pd.DataFrame:
        """Columns ``smiles, canonical_smiles, prediction, error``; invalid SMILES get NaN and a reason."""
        canonical = [canonicalize(s) if isinstance(s, str) else None for s in smiles]
        ok = [i for i, c in enumerate(canonical) if c is not None]
        pred = np.full(len(smiles), np.nan)
        if ok:  # the trial's test-time augmentation: mean over tta SMILES, canonical included
            pred[ok] = tta_predict(lambda s: self._predict_canonical(s, batch_size), [canonical[i] for i in ok],
                                   *self.tta)
        return pd.DataFrame({
            "smiles": list(smiles),
            "canonical_smiles": canonical,
            "prediction": pred,
            "error": row_errors(canonical),
        })


def load_saved_model(uri: str) -> PropertyPredictor:
    """A saved property model from an MLflow model/artifact URI or a local directory (the first ``head.json``
    inside); influence selection starts from it (task option ``base_model_uri``) through its context."""
    path = Path(uri)
    if not path.exists():
        import mlflow

        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    found = sorted(p.parent for p in path.rglob("head.json"))
    if not found:
        raise DataError(f"{uri}: no saved property model (head.json) inside (task option base_model_uri)")
    return PropertyPredictor.load(found[0])


class PropertyPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow model: input a DataFrame with a ``smiles`` column (or the first column), output predictions."""

    def load_context(self, context) -> None:  # noqa: ANN001 - MLflow's signature
        from trainables.property.dmpnn import DmpnnPredictor

        path = context.artifacts["model"]
        self.predictor = DmpnnPredictor.load(path) if DmpnnPredictor.is_dmpnn(path) else PropertyPredictor.load(path)

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - MLflow's signature
        return json_safe(self.predictor.predict(input_column(model_input, "smiles")))  # bad rows: null, not NaN

    @staticmethod
    def model_signature(model_dir: str | Path) -> Any:
        """Input: a ``smiles`` column; output: ``smiles, canonical_smiles, prediction, error`` (for the registry)."""
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema

        outputs = Schema([ColSpec("string", "smiles"), ColSpec("string", "canonical_smiles", required=False),
                          ColSpec("double", "prediction", required=False), ColSpec("string", "error")])
        return ModelSignature(inputs=Schema([ColSpec("string", "smiles")]), outputs=outputs)
