"""What every task's MLflow pyfunc shares: the input column it reads and the per-row error column.

A served model answers every row: a row it cannot read keeps its place with an empty prediction
and a reason, so callers can join the output back to their input. The task-specific predictors
live with their tasks (:mod:`trainables.property.serving`, :mod:`trainables.retro.serving`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

__all__ = ["input_column", "row_errors", "json_safe", "INVALID_SMILES"]

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


def json_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every missing value as ``None`` (object columns), for what a pyfunc returns.

    MLflow's scoring server writes a float NaN as the bare token ``NaN``, which is not JSON: a browser's or
    another language's strict parser rejects the whole answer because of one bad row. ``None`` in an object
    column is written as ``null``. Only columns with a missing value change (a batch of good rows keeps its
    float columns); a Python caller reads such a column with ``pd.to_numeric`` (None -> NaN).
    """
    out = frame.copy()
    for column in frame.columns[frame.isna().any()]:
        out[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return out
