"""MLflow pyfunc wrapper of a saved retro model directory (see :mod:`trainables.retro.predictor`)."""

from __future__ import annotations

import mlflow.pyfunc

from trainables.retro.predictor import RetroPredictor
from trainables.serving import input_column

__all__ = ["RetroPyfunc"]


class RetroPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow model: input a DataFrame with a ``product`` column (or the first column), output top-k reactants.

    ``params`` may set ``num_beams`` and ``top_k``.
    """

    def load_context(self, context) -> None:  # noqa: ANN001 - MLflow's signature
        self.predictor = RetroPredictor.load(context.artifacts["model"])

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - MLflow's signature
        products = input_column(model_input, "product")
        params = params or {}
        return self.predictor.predict(products, params.get("num_beams"), int(params.get("top_k", 10)))
