"""The epoch loop on a toy task: best-epoch checkpoint and test, patience, resume, schedule length, accumulation."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from trainables import NullReporter
from trainables.batching import padded_batches, steps_per_epoch, to_device
from trainables.data.tables import MoleculeTable
from trainables.loop import EpochLoop, is_better
from trainables.selection.active import ActiveSelector
from trainables.selection.base import AllTrainRows, SelectionContext
from trainables.selection.curriculum import CurriculumSelector
from trainables.selection.influence import InfluenceSelector


class Toy(EpochLoop):
    """y = 2x with a linear model; the valid metric each epoch is scripted, test reports the weight."""

    def __init__(self, valid: list[float], direction: str = "min", patience: int = 0, grad_accum: int = 1,
                 epochs: int | None = None) -> None:
        self.spec = SimpleNamespace(max_epochs=epochs or len(valid), seed=0, metric="valid_loss", direction=direction)
        self.config = {"lr": 0.1, "weight_decay": 0.0, "batch_size": 4, "grad_accum": grad_accum,
                       "patience": patience}
        torch.manual_seed(0)
        self.model = nn.Linear(1, 1)
        self.setup_accelerator()
        self.valid, self.weights, self.total, self.schedule = valid, [], 0, None
        x = torch.linspace(-1, 1, 10)[:, None]
        self.items = list(zip(x, 2 * x))

    def train_loader(self, epoch: int) -> DataLoader:
        return DataLoader(self.items, batch_size=4,
                          collate_fn=lambda b: {"x": torch.stack([p for p, _ in b]), "y": torch.stack([q for _, q in b])})

    def epoch_rows(self) -> list[int]:
        return [len(self.items)] * self.spec.max_epochs

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return nn.functional.mse_loss(self.model(batch["x"]), batch["y"]), len(batch["x"])

    def make_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
        self.total = total_steps
        self.schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        return self.schedule

    def _w(self) -> float:
        return float(self.unwrapped().weight.detach().reshape(()))

    def evaluate_valid(self, ckpt: Path) -> dict[str, float]:
        self.weights.append(self._w())
        return {"loss": self.valid[len(self.weights) - 1]}

    def evaluate_test(self, ckpt: Path) -> dict[str, float]:
        (ckpt / "test_predictions.csv").write_text(f"w\n{self._w()}\n")
        return {"w": self._w()}

    def export(self, path: Path) -> None:
        path.mkdir(parents=True)
        (path / "w.json").write_text(json.dumps(self._w()))


def test_test_is_scored_once_on_the_best_epoch_and_its_model_is_the_checkpoint(tmp_path: Path) -> None:
    toy = Toy([3.0, 1.0, 2.0, 4.0])
    reporter = NullReporter(keep_dir=tmp_path / "ckpt")
    final = toy.fit(reporter)
    assert [h["best_epoch"] for h in reporter.history] == [1, 2, 2, 2]
    assert all("test_w" not in h for h in reporter.history[:-1])
    assert len(set(toy.weights)) == 4  # the weights moved every epoch: the test below can tell epochs apart
    assert final["test_w"] == pytest.approx(toy.weights[1]) and final["best_valid_loss"] == 1.0
    ckpt = tmp_path / "ckpt"
    assert json.loads((ckpt / "model" / "w.json").read_text()) == pytest.approx(toy.weights[1])
    assert (ckpt / "test_predictions.csv").is_file() and not final["patience_stopped"]
    # state.pt resumes from the last epoch's weights, not the best
    state = torch.load(ckpt / "state.pt", weights_only=False)
    assert float(state["model"]["weight"].reshape(())) != pytest.approx(toy.weights[1])


def test_maximized_metric_keeps_the_largest() -> None:
    final = Toy([0.1, 0.9, 0.5], direction="max").fit(NullReporter())
    assert final["best_epoch"] == 2 and is_better(0.2, 0.1, "max") and not is_better(float("nan"), None, "min")
    assert is_better(0.5, 0.5, "max") and not is_better(0.6, 0.5, "min")  # ties go to the later epoch


def test_patience_stops_the_trial_and_scores_test_on_the_best() -> None:
    toy = Toy([1.0, 2.0, 3.0, 0.5, 0.1, 0.1], patience=2)  # epochs 2 and 3 do not improve: stop after 3
    reporter = NullReporter()
    final = toy.fit(reporter)
    assert [h["epoch"] for h in reporter.history] == [1, 2, 3]
    assert final["patience_stopped"] and final["best_epoch"] == 1 and final["test_w"] == pytest.approx(toy.weights[0])



class _Clock:
    """A fake ``time`` for the loop: only the toy's epochs (``tick``) advance it, so the budget test is exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.mark.parametrize(("budget", "epochs", "stopped"), [(35.0, 3, 1), (25.0, 2, 1), (1000.0, 6, 0)])
def test_time_budget_ends_the_trial_before_an_epoch_that_would_overrun(
        monkeypatch: pytest.MonkeyPatch, budget: float, epochs: int, stopped: int) -> None:
    import trainables.loop as loop

    clock = _Clock()
    monkeypatch.setattr(loop, "time", clock)
    toy = Toy([3.0, 1.0, 2.0, 4.0, 0.5, 0.4])
    toy.max_seconds = budget
    scored = toy.evaluate_valid

    def slow_valid(ckpt: Path) -> dict[str, float]:  # every epoch takes 10 s of the fake clock
        clock.now += 10.0
        return scored(ckpt)

    toy.evaluate_valid = slow_valid  # type: ignore[method-assign]
    reporter = NullReporter()
    final = toy.fit(reporter)
    # 35 s: after epoch 3 (30 s) a 4th 10-s epoch would end at 40 s; 25 s: after epoch 2 (20 s + 10 > 25)
    assert [h["epoch"] for h in reporter.history] == list(range(1, epochs + 1))
    assert final["budget_stopped"] == stopped and not final["patience_stopped"]
    best = min(range(epochs), key=lambda i: toy.valid[i])  # test still scored once, on the best epoch so far
    assert final["best_epoch"] == best + 1 and final["test_w"] == pytest.approx(toy.weights[best])
    assert "budget_stopped" not in Toy([1.0]).fit(NullReporter())  # no budget, no new column

def test_resume_keeps_the_best_epoch_of_the_first_run(tmp_path: Path) -> None:
    Toy([1.0, 2.0], epochs=2).fit(NullReporter(keep_dir=tmp_path / "ckpt"))
    # the first run ended (test on epoch 1); a longer run resumes from its last checkpoint
    first = json.loads((tmp_path / "ckpt" / "model" / "w.json").read_text())
    resumed = Toy([1.0, 2.0, 3.0, 4.0])
    resumed.weights = [0.0, 0.0]  # epochs 1-2 happened in the first run
    reporter = NullReporter(resume_from=tmp_path / "ckpt")
    final = resumed.fit(reporter)
    assert [h["epoch"] for h in reporter.history] == [3, 4]
    assert final["best_epoch"] == 1 and final["test_w"] == pytest.approx(first)


@pytest.mark.parametrize("accum", [1, 2, 3])
def test_schedule_counts_the_optimizer_steps_taken(accum: int) -> None:
    toy = Toy([1.0, 1.0, 1.0], grad_accum=accum)
    toy.fit(NullReporter())
    batches = 3  # 10 rows, batch 4
    assert toy.total == 3 * steps_per_epoch(10, 4, accum) == 3 * -(-batches // accum)
    assert toy.schedule.last_epoch == toy.total  # the schedule ends exactly where training does


def test_batches_are_sorted_padded_and_placed() -> None:
    seqs = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]]
    out = list(padded_batches(seqs, 0, 2, "cpu"))
    assert [c.tolist() for c, _, _ in out] == [[1, 2], [0, 3]]
    assert out[0][1].tolist() == [[4, 0], [5, 6]] and out[1][2].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    moved = to_device({"a": torch.ones(1), "b": [torch.zeros(1)], "n": 3}, "meta")
    assert moved["a"].device.type == "meta" and moved["b"][0].device.type == "meta" and moved["n"] == 3


def _ctx(n_train: int = 40, n_pool: int = 30, epochs: int = 4) -> SelectionContext:
    n = n_train + n_pool
    smiles = ["C" * (1 + i % 9) for i in range(n)]
    table = MoleculeTable(smiles, np.arange(n, dtype=float), [str(i) for i in range(n)], list(range(n)))
    ids = {"candidates": [[1] * len(s) for s in smiles], "valid": [], "test": []}
    unused = lambda *a: None  # noqa: E731
    return SelectionContext(candidates=table, n_train=n_train, ids=MappingProxyType(ids), valid=table, pad_id=0,
                            max_epochs=epochs, seed=0, device=torch.device("cpu"), config=MappingProxyType({}),
                            options=MappingProxyType({}), model=unused, predict=unused, embed=unused, phase1=unused)


def _planned_vs_trained(selector: Any, ctx: SelectionContext) -> tuple[list[int], list[int]]:
    selector.setup(ctx, NullReporter())
    planned = selector.epoch_sizes(ctx.max_epochs)
    return planned, [len(selector.indices(e)) for e in range(ctx.max_epochs)]


@pytest.mark.parametrize("selector", [
    AllTrainRows({}),
    CurriculumSelector({"curriculum_bins": 4}),
    ActiveSelector({"acquisition": "random", "n_select": 5, "rounds": 2}),
], ids=["none", "curriculum", "active"])
def test_schedule_length_is_the_rows_each_epoch_trains(selector: Any) -> None:
    planned, trained = _planned_vs_trained(selector, _ctx())
    assert planned == trained
    assert sum(planned) != 4 * 70  # never train + pool


def test_influence_top_k_only_schedule_counts_the_top_k() -> None:
    selector = InfluenceSelector({"top_k": 7, "influence_train_on": "topk"})
    selector.setup(_ctx(), NullReporter(), {"n_train": 40, "selected": list(range(40, 47)), "scores": [0.0] * 7,
                                            "stats": {}})
    assert selector.epoch_sizes(3) == [7, 7, 7] == [len(selector.indices(e)) for e in range(3)]
