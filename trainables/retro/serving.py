"""MLflow pyfunc wrapper of a saved retro model directory (see :mod:`trainables.retro.predictor`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from trainables.retro.predictor import RetroPredictor
from trainables.serving import input_column, json_safe

__all__ = ["RetroPyfunc", "TOP_K"]

TOP_K = 10  # predictions per product unless the caller asks for another ``top_k``


class RetroPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow model: input a DataFrame with a ``product`` column (or the first column), output top-k reactants.

    ``params`` may set ``num_beams`` and ``top_k``.
    """

    def load_context(self, context) -> None:  # noqa: ANN001 - MLflow's signature
        self.predictor = RetroPredictor.load(context.artifacts["model"])

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - MLflow's signature
        products = input_column(model_input, "product")
        params = params or {}
        out = self.predictor.predict(products, params.get("num_beams"), int(params.get("top_k", TOP_K)))
        return json_safe(out)  # a bad row's columns are null in the served JSON, not NaN

    @staticmethod
    def model_signature(model_dir: str | Path) -> Any:
        """What the model reads and returns, for the registry (and MLflow's input checks).

        Input: a ``product`` SMILES column. Output: ``product, canonical_product, prediction_1..k, error``.
        Params: ``num_beams`` (default: the beam width the trial was tested with, from ``retro.json``)
        and ``top_k`` (default 10, at most the beams); without them in the signature MLflow drops both.
        """
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

        beams = int(json.loads((Path(model_dir) / "retro.json").read_text())["num_beams"])
        top_k = min(TOP_K, beams)
        outputs = Schema([
            ColSpec("string", "product"), ColSpec("string", "canonical_product", required=False),
            *(ColSpec("string", f"prediction_{k}") for k in range(1, top_k + 1)), ColSpec("string", "error"),
        ])
        params = ParamSchema([ParamSpec("num_beams", "long", beams), ParamSpec("top_k", "long", top_k)])
        return ModelSignature(inputs=Schema([ColSpec("string", "product")]), outputs=outputs, params=params)
