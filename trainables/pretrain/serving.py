"""MLflow pyfunc of a pretrained folder: molecule embeddings (mean-pooled encoder states) from SMILES.

A pretrained checkpoint is registered to be fine-tuned (``model.path: models:/NAME@ALIAS``); serving it
gives what an encoder offers on its own, an embedding per molecule (e.g. for similarity search).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
import torch
from transformers import AutoModel, AutoModelForSeq2SeqLM, AutoTokenizer

from trainables.batching import model_device, padded_batches
from trainables.data.chem import canonicalize
from trainables.serving import input_column

__all__ = ["PretrainedEncoder", "PretrainPyfunc"]


class PretrainedEncoder:
    """The encoder of a pretrained folder (an encoder's base model, a seq2seq model's encoder)."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        info = json.loads((path / "pretrain.json").read_text())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if info["objective"] == "denoise":
            self.encoder = AutoModelForSeq2SeqLM.from_pretrained(path).get_encoder().eval()
        else:
            self.encoder = AutoModel.from_pretrained(path).eval()

    @torch.no_grad()
    def embed(self, smiles: list[str], batch_size: int = 128) -> list[list[float]]:
        ids = self.tokenizer(smiles, truncation=True, max_length=self.tokenizer.model_max_length)["input_ids"]
        out: list[list[float]] = [[] for _ in ids]
        for chunk, input_ids, mask in padded_batches(ids, self.tokenizer.pad_token_id, batch_size,
                                                     model_device(self.encoder)):
            states = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()
            pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            for j, i in enumerate(chunk):
                out[i] = pooled[j].cpu().tolist()
        return out

    def predict(self, smiles: list[Any]) -> pd.DataFrame:
        """Columns ``smiles, canonical_smiles, embedding`` (JSON list), ``error``; invalid SMILES get a reason."""
        canonical = [canonicalize(s) if isinstance(s, str) else None for s in smiles]
        ok = [i for i, c in enumerate(canonical) if c is not None]
        vectors = self.embed([canonical[i] for i in ok]) if ok else []
        embedding = [""] * len(smiles)
        for i, v in zip(ok, vectors):
            embedding[i] = json.dumps([round(x, 6) for x in v])
        return pd.DataFrame({"smiles": list(smiles), "canonical_smiles": canonical, "embedding": embedding,
                             "error": ["" if c is not None else "invalid SMILES" for c in canonical]})


class PretrainPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow model: input a DataFrame with a ``smiles`` column (or the first column), output embeddings."""

    def load_context(self, context) -> None:  # noqa: ANN001 - MLflow's signature
        self.encoder = PretrainedEncoder(context.artifacts["model"])

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - MLflow's signature
        return self.encoder.predict(input_column(model_input, "smiles"))

    @staticmethod
    def model_signature(model_dir: str | Path) -> Any:
        """Input: a ``smiles`` column; output: ``smiles, canonical_smiles, embedding, error``."""
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema

        outputs = Schema([ColSpec("string", "smiles"), ColSpec("string", "canonical_smiles", required=False),
                          ColSpec("string", "embedding"), ColSpec("string", "error")])
        return ModelSignature(inputs=Schema([ColSpec("string", "smiles")]), outputs=outputs)
