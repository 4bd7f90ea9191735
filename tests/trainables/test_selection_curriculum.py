"""Curriculum: the eligible set of every epoch follows the threshold formula; counts are logged."""

from __future__ import annotations

import math

import numpy as np
import pytest

from studies.spec import parse_study
from trainables import NullReporter
from trainables.errors import StudyError
from trainables.property.task import prepare_property, train_property
from trainables.selection.curriculum import DIFFICULTIES, PACINGS, CurriculumSelector, binned_difficulty, eligible


def test_bins_and_their_edges():
    d = np.array([0.0, 1.0, 2.4, 2.5, 7.0, 10.0])
    # 4 bins of width 2.5 over [0, 10]: edges 0, 2.5, 5, 7.5, 10 (the maximum closes the last bin)
    np.testing.assert_allclose(binned_difficulty(d, 4, "lower"), [0.0, 0.0, 0.0, 2.5, 5.0, 7.5])
    np.testing.assert_allclose(binned_difficulty(d, 4), [2.5, 2.5, 2.5, 5.0, 7.5, 10.0])


def test_threshold_admits_exactly_the_bins_below_it():
    """The paper's rule: threshold = d_min + (d_max - d_min) e / E; a molecule trains once its bin lies below it."""
    d = np.arange(0.0, 101.0)  # lengths 0..100, 20 bins of width 5, E = 5 epochs
    for epoch, share in enumerate([0.2, 0.4, 0.6, 0.8, 1.0]):
        rows, threshold = eligible(d, 20, epoch, 5, PACINGS.get("linear"))
        assert threshold == pytest.approx(100 * share)
        # bins [0,5) ... : every molecule below the threshold, none at or above it (but the last epoch's max)
        expected = np.flatnonzero(d < threshold) if share < 1 else np.arange(len(d))
        np.testing.assert_array_equal(rows, expected)
    # Skewed lengths, as in Lipophilicity: epoch 1 of 5 must not admit the bin the threshold cuts through.
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.normal(45, 12, 4000).round(), 10, 140)
    rows, threshold = eligible(lengths, 20, 0, 5, PACINGS.get("linear"))
    assert lengths[rows].max() < threshold
    width = (lengths.max() - lengths.min()) / 20
    assert set(np.flatnonzero(lengths < threshold - width).tolist()) <= set(rows.tolist())


def test_more_epochs_than_bins_start_with_the_easiest_bin():
    d = np.arange(0.0, 11.0)
    rows, threshold = eligible(d, 2, 0, 10, PACINGS.get("linear"))  # threshold 1 is inside the first bin [0, 5)
    assert threshold == pytest.approx(1.0)
    np.testing.assert_array_equal(rows, np.arange(5))


@pytest.mark.parametrize("pacing", ["linear", "root", "quadratic"])
def test_eligible_set_follows_the_formula(pacing):
    rng = np.random.default_rng(0)
    difficulty = rng.integers(5, 80, size=500).astype(float)
    bins, epochs = 7, 5
    edges = np.linspace(difficulty.min(), difficulty.max(), bins + 1)
    pace = {"linear": lambda f: f, "root": math.sqrt, "quadratic": lambda f: f * f}[pacing]
    previous = -1
    for epoch in range(epochs):
        rows, threshold = eligible(difficulty, bins, epoch, epochs, PACINGS.get(pacing))
        expected_threshold = difficulty.min() + (difficulty.max() - difficulty.min()) * pace((epoch + 1) / epochs)
        assert threshold == pytest.approx(expected_threshold)
        upper = edges[np.minimum(np.digitize(difficulty, edges) - 1, bins - 1) + 1]
        admitted = np.flatnonzero(upper <= expected_threshold + 1e-9)
        if len(admitted) == 0:
            admitted = np.flatnonzero(upper == upper.min())
        np.testing.assert_array_equal(rows, admitted)
        assert len(rows) >= max(previous, 1)  # never empty, never shrinks
        previous = len(rows)
    assert previous == len(difficulty)  # the last epoch trains on everything


def test_difficulties():
    assert DIFFICULTIES.get("smiles_length")("c1ccccc1O") == 9
    assert DIFFICULTIES.get("heavy_atoms")("c1ccccc1O") == 7
    assert DIFFICULTIES.get("rings")("c1ccc2ccccc2c1") == 2
    assert DIFFICULTIES.get("rings")("C1CC1CCc1ccccc1") == 2  # any SMILES, whatever RDKit initialised before


def test_unknown_difficulty_or_zero_bins_fail_clearly():
    with pytest.raises(StudyError, match="unknown difficulty .weight."):
        CurriculumSelector({"curriculum_difficulty": "weight"})
    with pytest.raises(StudyError, match="curriculum_bins"):
        CurriculumSelector({"curriculum_bins": 0})


def test_curriculum_trial_logs_per_epoch_counts():
    spec = parse_study({
        "name": "tiny-curriculum", "task": "property",
        "dataset": {"name": "nci-logp", "limit": 200, "split": "random"},
        "model": {"name": "tiny-bert", "max_length": 64}, "search_space": "selection",
        "fixed": {"selection": "curriculum", "curriculum_bins": 5}, "max_epochs": 3,
        "scheduler": {"grace_period": 3},  # pacing and difficulty are searched: no rung before every molecule trains
    })
    data = prepare_property(spec).payload
    reporter = NullReporter()
    config = {"selection": "curriculum", "curriculum_bins": 5, "batch_size": 32}
    train_property(config, data, spec, reporter)
    lengths = np.array([len(s) for s in data.train.smiles], dtype=float)
    expected = [len(eligible(lengths, 5, e, 3, PACINGS.get("linear"))[0]) for e in range(3)]
    assert [h["n_train_rows"] for h in reporter.history] == expected
    assert [h["curriculum_n_eligible"] for h in reporter.history] == expected
    assert expected[0] < expected[-1] == len(data.train)
