from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from studies.spec import parse_study
from tests.conftest import tiny_study
from trainables import TASKS, NullReporter
from trainables.property.data import regression_metrics
from trainables.property.serving import PropertyPredictor
from trainables.property.task import PropertyTrainer, train_property

CONFIG = {"method": "full", "lr": 1e-3, "batch_size": 32, "head_dropout": 0.0, "weight_decay": 0.0}


@pytest.fixture(scope="module")
def spec():
    return parse_study(tiny_study())


@pytest.fixture(scope="module")
def prepared(spec):
    return TASKS.get("property").prepare(spec)


def test_regression_metrics_by_hand() -> None:
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert m["mse"] == pytest.approx(4 / 3) and m["rmse"] == pytest.approx(math.sqrt(4 / 3))
    assert m["mae"] == pytest.approx(2 / 3) and m["r2"] == pytest.approx(1 - 4 / 2)


def test_prepare_splits_and_hashes(prepared) -> None:
    data = prepared.payload
    assert prepared.summary == {"n_train": 240, "n_valid": 30, "n_test": 30, "n_pool": 0}
    assert not set(data.train.smiles) & set(data.test.smiles)
    assert set(prepared.tags) == {"split_hash.train", "split_hash.valid", "split_hash.test"}


def test_targets_standardized_with_train_statistics_only(spec, prepared) -> None:
    trainer = PropertyTrainer(CONFIG, prepared.payload, spec)
    assert trainer.model.config.target_mean == pytest.approx(prepared.payload.train.targets.mean())
    assert trainer.model.config.target_std == pytest.approx(prepared.payload.train.targets.std())


def test_length_grouped_batches_pad_less_than_global_padding() -> None:
    # transformers groups within mega-batches of up to 50 batches (a quarter of the data at most)
    spec = parse_study(tiny_study(dataset={"limit": 2000}))
    trainer = PropertyTrainer(CONFIG, TASKS.get("property").prepare(spec).payload, spec)
    loader = trainer.rows_loader(np.arange(trainer.n_train), epoch=0)
    batches = list(loader)
    assert sum(len(b["labels"]) for b in batches) == trainer.n_train
    widths = [b["input_ids"].shape[1] for b in batches]
    longest = max(len(x) for x in trainer.ids["candidates"])
    assert len(set(widths)) > 1 and np.mean(widths) < longest
    padded = sum(int((b["attention_mask"] == 0).sum()) for b in batches)
    assert padded < sum(longest - len(x) for x in trainer.ids["candidates"]) / 2


def test_trial_reports_every_epoch_and_test_once(spec, prepared, tmp_path: Path) -> None:
    reporter = NullReporter(keep_dir=tmp_path / "ckpt")
    final = train_property(CONFIG, prepared.payload, spec, reporter)
    assert [h["epoch"] for h in reporter.history] == [1, 2]
    assert all("valid_rmse" in h for h in reporter.history)
    assert "test_rmse" not in reporter.history[0] and "test_rmse" in final
    assert reporter.history[1]["train_loss"] < reporter.history[0]["train_loss"]
    ckpt = tmp_path / "ckpt"
    assert {p.name for p in ckpt.iterdir()} >= {"state.pt", "model", "metrics.json", "valid_predictions.csv",
                                                  "test_predictions.csv"}
    # the exported model predicts what the trainer predicted
    predictor = PropertyPredictor.load(ckpt / "model")
    out = predictor.predict(prepared.payload.test.smiles[:5] + ["not-a-smiles"])
    trainer_test = pd.read_csv(ckpt / "test_predictions.csv")["prediction"].to_numpy()[:5]
    assert np.allclose(out["prediction"][:5], trainer_test, atol=1e-4)
    assert math.isnan(out["prediction"].iloc[5]) and out["error"].iloc[5] == "invalid SMILES"


def test_resume_continues_from_the_checkpoint(prepared, tmp_path: Path) -> None:
    spec1 = parse_study(tiny_study(max_epochs=1))
    spec3 = parse_study(tiny_study(max_epochs=3))
    first = NullReporter(keep_dir=tmp_path / "ckpt")
    train_property(CONFIG, prepared.payload, spec1, first)
    resumed = NullReporter(resume_from=tmp_path / "ckpt")
    train_property(CONFIG, prepared.payload, spec3, resumed)
    assert [h["epoch"] for h in resumed.history] == [2, 3]


@pytest.mark.parametrize("method", ["bitfit", "lora", "ia3"])
def test_peft_methods_train_fewer_parameters_and_export(method: str, spec, prepared, tmp_path: Path) -> None:
    reporter = NullReporter(keep_dir=tmp_path / "ckpt")
    final = train_property({**CONFIG, "method": method, "lora_r": 4}, prepared.payload, spec, reporter)
    assert final["trainable_params"] < final["total_params"]
    predictor = PropertyPredictor.load(tmp_path / "ckpt" / "model")  # adapters merged: a plain model
    assert not any("lora_" in n or "ia3_" in n for n, _ in predictor.model.named_parameters())
    assert torch.isfinite(torch.tensor(predictor.predict(["CCO"])["prediction"].to_numpy())).all()
