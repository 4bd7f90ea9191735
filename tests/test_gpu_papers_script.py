"""benchmarks/gpu_papers.py --smoke end to end: the GPU run's code path on the CPU (tiny-bart, a few hundred rows).

It runs under the device suite's placement tracker, so every model input of the script (its timing and FLOP
passes included, not only the trainers') must have been moved to the model's device.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.trainables.test_devices import _assert_placed, _Tracker, placement  # noqa: F401 - the fixture
from trainables.batching import steps_per_epoch

_spec = importlib.util.spec_from_file_location("gpu_papers", ROOT / "benchmarks" / "gpu_papers.py")
gpu_papers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_papers)


def _published(treatment: str) -> dict[str, float]:
    rows = yaml.safe_load((ROOT / "studies" / "papers" / "published.yaml").read_text())["retro_table2"]["rows"]
    return next(r["published"] for r in rows if r["key"] == treatment)


@pytest.mark.slow  # ~25 s alone, ~50 s under load (placement tracking)
def test_smoke_run_reports_both_stages_beside_the_report(placement: _Tracker, tmp_path: Path,  # noqa: F811
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import trainables.retro.task as retro

    loaded: list[Any] = []  # what the retro rows start from: stage 1's exported checkpoint
    real = retro.load_seq2seq

    def spy(spec: Any, smiles: Any, seed: int = 0) -> Any:
        loaded.append((spec.path, (Path(spec.path) / "pretrain.json").is_file()))
        return real(spec, smiles, seed)

    monkeypatch.setattr(retro, "load_seq2seq", spy)
    results = gpu_papers.main(["--smoke", "--out", str(tmp_path)])
    _assert_placed(placement)

    assert json.loads((tmp_path / "gpu_papers.json").read_text())["retro"][1]["treatment"] == "fix_encoder"
    text = (tmp_path / "gpu_papers.md").read_text()
    p = results["pretrain"]
    assert p["model"] == "tiny-bart" and 1 <= p["epochs"] <= 2 and p["epochs"] <= p["planned_epochs"]
    assert p["steps"] == p["epochs"] * steps_per_epoch(p["corpus"]["n_train"], 32, 1)  # --smoke: batch 32
    assert p["corpus"]["n_leakage_removed"] > 0  # the guard ran on USPTO-50K's held-out molecules
    assert p["tokens_per_s"] > 0 and p["flops_per_token"] > 0 and p["mfu"] is None  # CPU: no peak, no MFU
    for key in ("valid_token_acc", "valid_exact", "test_token_acc", "test_exact"):
        assert 0.0 <= p[key] <= 1.0, key
    assert p["test_token_acc"] > 0.1  # two epochs of denoising learn the frequent tokens

    assert [r["treatment"] for r in results["retro"]] == ["full", "fix_encoder"]
    assert len(loaded) == 2 and all(ok for _, ok in loaded) and loaded[0][0] == loaded[1][0]
    full, frozen = results["retro"]
    assert full["trainable_params"] == full["total_params"] > frozen["trainable_params"]
    for row in results["retro"]:
        assert row["published"] == _published(row["treatment"])
        assert 1 <= row["epochs"] <= 2 and row["test_reactions"] == 16 and row["valid_reactions"] == 16
        assert row["test_top1"] <= row["test_top3"] <= row["test_top5"] <= 1.0
        assert row["flops_per_token"] > p["flops_per_token"]  # per target token: the source is paid for too
        assert f"| {row['treatment']} | {row['epochs']} ({row['planned_epochs']}) |" in text
        assert f"| {100 * row['published']['test_top1']:.1f} |" in text
    assert "MFU | valid token acc" in text and "unknown" in text and "smoke" in text


def test_budget_sizes_the_epochs_to_what_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    """11 s of training and 2 s of validation per epoch: the epochs and the loop's budget follow the arithmetic."""

    class _Spec:
        max_epochs = 100

        def model_copy(self, update: dict[str, Any]) -> Any:
            out = _Spec()
            out.max_epochs = update["max_epochs"]
            return out

    class _Trainer:
        spec, max_seconds = _Spec(), None

        def epoch_rows(self) -> list[int]:
            return [1000] * self.spec.max_epochs

        def valid_rows(self) -> int:
            return 100

        def evaluate_valid(self, ckpt: Path) -> dict[str, float]:
            clock.now += 2.0
            return {}

    class _Clock:
        now = 0.0

        def perf_counter(self) -> float:
            return self.now

    clock = _Clock()
    monkeypatch.setattr(gpu_papers, "time", clock)
    # 0.01 s per row and 1 s to build the loader: 11 s per epoch of 1000 rows
    monkeypatch.setattr(gpu_papers, "_step_seconds", lambda trainer: (1.0, 100, 1.0))
    trainer = _Trainer()
    plan = gpu_papers.fit_budget(trainer, budget_s=100.0, test_rows=50, test_cost=3.0, cap=100)
    # test reserve 2 s / 100 rows x 50 x 3 = 3 s; an epoch (11 + 2) x 1.15 = 14.95 s; (100 - 2 - 3) / 14.95 -> 6
    assert plan["test_reserve_s"] == pytest.approx(3.0) and plan["planned_epoch_s"] == pytest.approx(14.95)
    assert plan["planned_epochs"] == trainer.spec.max_epochs == math.floor(95 / 14.95) == 6
    assert trainer.max_seconds == pytest.approx(95.0)
    assert gpu_papers.fit_budget(_Trainer(), 100.0, 50, 3.0, cap=4)["planned_epochs"] == 4
    assert gpu_papers.fit_budget(_Trainer(), 1.0, 50, 3.0, cap=4)["planned_epochs"] == 1  # always one epoch
