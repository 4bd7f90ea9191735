"""Active learning: batched MC dropout matches a loop statistically; acquisitions follow the rounds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertModel

from studies.spec import parse_study
from tests.conftest import tiny_selection_study
from trainables import NullReporter
from trainables.models.regression import HeadConfig, RegressionModel
from trainables.property.task import PropertyTrainer, prepare_property, train_property
from trainables.selection.active import acquisition_epochs, mc_dropout, mc_dropout_loop


def tiny_model(dropout: float = 0.2) -> RegressionModel:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return RegressionModel(BertModel(cfg, add_pooling_layer=False), HeadConfig(hidden_size=32, head_dropout=dropout))


def sequences(n: int = 12) -> list[list[int]]:
    rng = np.random.default_rng(0)
    return [rng.integers(4, 40, size=rng.integers(5, 15)).tolist() for _ in range(n)]


def test_batched_mc_dropout_matches_the_loop_statistically():
    model, ids, passes = tiny_model(), sequences(), 400
    torch.manual_seed(7)
    batched = mc_dropout(model, ids, 0, passes, batch_size=len(ids))
    torch.manual_seed(7)
    looped = mc_dropout_loop(model, ids, 0, passes, batch_size=len(ids))
    assert batched.shape == looped.shape == (passes, len(ids))
    # Different draws of the same distribution: means within 5 standard errors, stds within 15%.
    se = torch.sqrt((batched.var(0) + looped.var(0)) / passes)
    assert ((batched.mean(0) - looped.mean(0)).abs() < 5 * se).all()
    ratio = batched.std(0) / looped.std(0)
    assert ((ratio > 0.85) & (ratio < 1.15)).all()
    assert (batched.std(0) > 0).all()  # every copy drew its own masks
    model.eval()
    mc_dropout(model, ids, 0, 3)
    assert not model.training  # the caller's mode is restored


def test_batched_mc_dropout_is_seeded_and_exact_without_dropout():
    model, ids = tiny_model(), sequences()
    torch.manual_seed(1)
    a = mc_dropout(model, ids, 0, 6)
    torch.manual_seed(1)
    torch.testing.assert_close(mc_dropout(model, ids, 0, 6), a)
    plain = tiny_model(0.0)
    torch.testing.assert_close(mc_dropout(plain, ids, 0, 4), mc_dropout_loop(plain, ids, 0, 4), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rounds,epochs", [(1, 2), (2, 5), (3, 4), (4, 10)])
def test_acquisition_epochs_are_distinct_and_leave_training_after_each(rounds, epochs):
    e = acquisition_epochs(rounds, epochs)
    assert len(set(e)) == rounds and min(e) >= 1 and max(e) <= epochs - 1 and e == sorted(e)


def tiny_spec(**fixed):
    return parse_study(tiny_selection_study("active", limit=200, max_epochs=3, **fixed))


@pytest.mark.parametrize("acquisition", ["uncertainty", "random"])
def test_active_trial_adds_n_select_per_round(tmp_path, acquisition):
    spec = tiny_spec(n_select=8, rounds=2)
    data = prepare_property(spec).payload
    config = {"selection": "active", "acquisition": acquisition, "n_select": 8, "rounds": 2, "mc_passes": 6,
              "batch_size": 32, "head_dropout": 0.2}
    reporter = NullReporter(keep_dir=tmp_path)
    train_property(config, data, spec, reporter)
    n = len(data.train)
    assert [h["n_train_rows"] for h in reporter.history] == [n, n + 8, n + 16]
    table = pd.read_csv(tmp_path / "selection.csv")
    assert len(table) == 16 and table["smiles"].is_unique and set(table["source"]) == {"pool"}
    assert table["round"].tolist() == [1] * 8 + [2] * 8
    assert table["mc_std"].notna().all() == (acquisition == "uncertainty")


def test_uncertainty_picks_the_largest_std():
    spec = tiny_spec(n_select=5, rounds=1)
    data = prepare_property(spec).payload
    trainer = PropertyTrainer({"selection": "active", "n_select": 5, "rounds": 1, "mc_passes": 8,
                               "head_dropout": 0.2}, data, spec)
    selector = trainer.selector
    selector.setup(trainer.selection_context(), NullReporter())
    rows = selector.indices(acquisition_epochs(1, 3)[0])
    picked = rows[trainer.n_train :]
    pool = np.arange(trainer.n_train, len(trainer.candidates))
    torch.manual_seed(trainer.seed * 1000)
    std = mc_dropout(trainer.model, [trainer.ids["candidates"][i] for i in pool], trainer.tokenizer.pad_token_id, 8,
                     64).std(0).numpy()
    np.testing.assert_array_equal(np.sort(picked), np.sort(pool[np.argsort(-std)[:5]]))
