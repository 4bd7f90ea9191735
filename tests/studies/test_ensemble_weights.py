"""Ensemble member weights: a least-squares fit on the simplex of the *valid* predictions; weighted spread."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from studies.ensemble import ensemble_metrics, ensemble_weights
from trainables.property.ensemble import EnsemblePredictor, fit_weights, weighted_mean_spread


def _frame(ids: np.ndarray, y: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"id": ids, "smiles": [f"C{i}" for i in ids], "target": y, "prediction": pred})


def test_a_known_convex_combination_is_recovered_and_weights_live_on_the_simplex() -> None:
    rng = np.random.default_rng(0)
    p = rng.normal(size=(3, 200))
    w = fit_weights(p, 0.2 * p[0] + 0.8 * p[2])
    np.testing.assert_allclose(w, [0.2, 0.0, 0.8], atol=1e-4)
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"predictions \(2, 5\) do not match 4 targets"):
        fit_weights(np.zeros((2, 5)), np.zeros(4))


def test_a_bad_member_gets_a_small_weight() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=300)
    good, fair, bad = y + rng.normal(0, 0.3, 300), y + rng.normal(0, 0.5, 300), rng.normal(0, 2, 300)
    w = fit_weights(np.stack([good, fair, bad]), y)
    assert w[2] < 0.05 < w[1] < w[0]  # two fair members share by their noise; noise alone is left out
    # and the weighted ensemble beats the plain mean
    assert np.mean((w @ np.stack([good, fair, bad]) - y) ** 2) < np.mean((np.mean([good, fair, bad], 0) - y) ** 2)


def test_weights_come_from_valid_only() -> None:
    rng = np.random.default_rng(2)
    ids_v, ids_t = np.arange(100), np.arange(100, 180)
    yv, yt = rng.normal(size=100), rng.normal(size=80)
    valid = [_frame(ids_v, yv, yv + rng.normal(0, 0.2, 100)), _frame(ids_v, yv, rng.normal(size=100))]
    # on test the second member is perfect, the first useless: fitting on test would flip the weights
    test = [_frame(ids_t, yt, rng.normal(size=80)), _frame(ids_t, yt, yt)]
    w = ensemble_weights(valid)
    assert w[1] < 0.1 and w[0] > 0.9
    metrics, out = ensemble_metrics(test, w)
    mean, spread = weighted_mean_spread(np.stack([test[0]["prediction"], test[1]["prediction"]]), w)
    np.testing.assert_allclose(out["prediction"], mean)
    np.testing.assert_allclose(out["uncertainty"], spread)
    assert metrics["rmse"] == pytest.approx(float(np.sqrt(np.mean((mean - yt) ** 2))))
    # a member whose rows disagree with member 0's is a clear error
    with pytest.raises(Exception, match="member 1: its predictions cover other molecules"):
        ensemble_weights([valid[0], test[1]])


def test_weighted_spread_and_equal_weights() -> None:
    p = np.array([[1.0, 2.0], [3.0, 2.0]])
    mean, spread = weighted_mean_spread(p)
    np.testing.assert_allclose(mean, p.mean(0))
    np.testing.assert_allclose(spread, p.std(0))
    mean, spread = weighted_mean_spread(p, np.array([0.75, 0.25]))
    np.testing.assert_allclose(mean, [1.5, 2.0])
    np.testing.assert_allclose(spread, [np.sqrt(0.75 * 0.25 + 0.25 * 2.25), 0.0])


class _Member:
    def __init__(self, values: list[float]) -> None:
        self.values = values

    def predict(self, smiles: list[str]) -> pd.DataFrame:
        return pd.DataFrame({"smiles": smiles, "canonical_smiles": smiles, "prediction": self.values,
                             "error": [""] * len(smiles)})


def test_the_served_ensemble_uses_its_weights() -> None:
    out = EnsemblePredictor([_Member([1.0, 0.0]), _Member([3.0, 4.0])], [0.75, 0.25]).predict(["C", "CC"])
    np.testing.assert_allclose(out["prediction"], [1.5, 1.0])
    np.testing.assert_allclose(out["uncertainty"], [np.sqrt(0.75), np.sqrt(3.0)])
    with pytest.raises(ValueError, match="need 2 non-negative weights summing to 1"):
        EnsemblePredictor([_Member([1.0]), _Member([2.0])], [0.9, 0.3])
