"""What every task's MLflow pyfunc shares: the input column it reads and the per-row error column.

A served model answers every row: a row it cannot read keeps its place with an empty prediction
and a reason, so callers can join the output back to their input. The task-specific predictors
live with their tasks (:mod:`trainables.property.serving`, :mod:`trainables.retro.serving`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

__all__ = ["input_column", "row_errors", "INVALID_SMILES"]

INVALID_SMILES = "invalid SMILES"


def input_column(model_input: Any, column: str) -> list[Any]:
    """The values a pyfunc predicts for: ``column`` of a DataFrame (else its first column), or a sequence."""
    if isinstance(model_input, pd.DataFrame):
        name = column if column in model_input.columns else model_input.columns[0]
        return model_input[name].tolist()
    return list(model_input)


def row_errors(canonical: Sequence[Any]) -> list[str]:
    """The ``error`` column: empty where the input was read (its canonical form is not None), else the reason."""
    return ["" if c is not None else INVALID_SMILES for c in canonical]
