"""Costs every trial reports (``trainables.metrics.COSTS``), measured by the epoch loop."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.trainables.test_loop import Toy
from trainables import NullReporter
from trainables.metrics import COSTS, parse_objective


class SlowValid(Toy):
    """Valid evaluation of 4 molecules takes 50 ms: 12.5 ms each, 12,500 ms per 1,000."""

    def valid_rows(self) -> int:
        return 4

    def evaluate_valid(self, ckpt: Path) -> dict[str, float]:
        time.sleep(0.05)
        return super().evaluate_valid(ckpt)


def test_every_epoch_reports_each_cost() -> None:
    loop = SlowValid([1.0, 0.5])
    loop.spec.resources = SimpleNamespace(num_workers=2, gpus_per_trial=0)
    reporter = NullReporter()
    loop.fit(reporter)
    first, second = reporter.history
    assert set(COSTS) <= set(first)
    assert first["trainable_params"] == 2  # nn.Linear(1, 1): a weight and a bias
    assert first["peak_memory_mb"] == 0.0  # CPU: no accelerator memory
    assert 12_500 <= first["predict_ms_per_1k"] < 40_000
    # cumulative, and x2 for two workers: at least two valid evaluations of 50 ms each, on two devices
    assert second["device_seconds"] > first["device_seconds"] >= 2 * 0.05


def test_a_resumed_trial_counts_on_from_its_checkpoint(tmp_path: Path) -> None:
    first = NullReporter(keep_dir=tmp_path / "ckpt")
    SlowValid([1.0, 2.0], epochs=2).fit(first)
    resumed = NullReporter(resume_from=tmp_path / "ckpt")
    loop = SlowValid([1.0, 2.0, 3.0])
    loop.weights = [0.0, 0.0]
    loop.fit(resumed)
    assert resumed.history[0]["device_seconds"] > first.history[-1]["device_seconds"] + 0.05


def test_costs_are_minimised_and_unknown_objectives_are_named() -> None:
    assert {parse_objective(c, "property").direction for c in COSTS} == {"min"}
    assert parse_objective("valid_r2", "property").direction == "max"
    with pytest.raises(Exception, match="'gpu_hours' is neither"):
        parse_objective("gpu_hours", "property")
