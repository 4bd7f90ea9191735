"""Influence selection: exact answers on a linear model, LiSSA against them, the cache, a trial."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from studies.spec import parse_study
from trainables import NullReporter
from trainables.errors import StudyError
from trainables.property import PropertyTrainer, prepare_property, train_property
from trainables.selection.influence import (
    FlatModule, InfluenceSelector, LissaSettings, exact_ihvp, influence_scores, lissa_ihvp, per_sample_grads,
    per_sample_grads_loop,
)


def linear(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x @ theta


@pytest.fixture
def problem():
    gen = torch.Generator().manual_seed(0)
    d = 6
    true = torch.randn(d, generator=gen)
    make = lambda n: (lambda x: (x, x @ true + 0.3 * torch.randn(n, generator=gen)))(torch.randn(n, d, generator=gen))  # noqa: E731
    theta = true + 0.2 * torch.randn(d, generator=gen)  # not at the optimum: gradients are not zero
    return theta, make(200), make(40), make(60)


def closed_form(theta, train, valid, pool, damping):
    """Influence of each pool sample for least squares, from the textbook formulas (float64 numpy)."""
    th = theta.double().numpy()
    (xt, _), (xv, yv), (xp, yp) = [(x.double().numpy(), y.double().numpy()) for x, y in (train, valid, pool)]
    hess = 2 * xt.T @ xt / len(xt) + damping * np.eye(len(th))
    g_valid = 2 * xv.T @ (xv @ th - yv) / len(xv)
    g_pool = 2 * (xp @ th - yp)[:, None] * xp
    return -g_pool @ np.linalg.solve(hess, g_valid)


def test_per_sample_grads_match_closed_form_and_loop(problem):
    theta, _, _, (x, y) = problem
    batched = per_sample_grads(linear, theta, x, y)
    expected = 2 * (x @ theta - y)[:, None] * x
    torch.testing.assert_close(batched, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_sample_grads_loop(linear, theta, x, y), batched, rtol=1e-5, atol=1e-5)


def test_exact_influence_equals_closed_form(problem):
    theta, train, valid, pool = problem
    scores = influence_scores(linear, theta, train, valid, pool, solver="exact", lissa=LissaSettings(damping=0.01))
    np.testing.assert_allclose(scores, closed_form(theta, train, valid, pool, 0.01), rtol=1e-4, atol=1e-6)


def test_lissa_full_batch_converges_to_the_inverse(problem):
    theta, (x, y), _, _ = problem
    v = torch.randn(len(theta), generator=torch.Generator().manual_seed(1))
    exact = exact_ihvp(linear, theta, x, y, v, damping=0.01)
    approx = lissa_ihvp(linear, theta, x, y, v, LissaSettings(depth=400, damping=0.01, batch_size=10_000))
    assert torch.linalg.norm(approx - exact) / torch.linalg.norm(exact) < 1e-3


def test_stochastic_lissa_ranks_like_exact(problem):
    theta, train, valid, pool = problem
    exact = closed_form(theta, train, valid, pool, 0.01)
    approx = influence_scores(linear, theta, train, valid, pool,
                              lissa=LissaSettings(depth=300, damping=0.01, repeats=4, batch_size=32, seed=3))
    assert spearmanr(approx, exact).statistic > 0.95
    assert np.linalg.norm(approx - exact) / np.linalg.norm(exact) < 0.25


def test_lissa_with_too_small_scale_fails_clearly(problem):
    theta, (x, y), _, _ = problem
    with pytest.raises(StudyError, match="LiSSA diverged"):
        lissa_ihvp(linear, theta, x, y, torch.ones(len(theta)), LissaSettings(depth=200, scale=0.01, batch_size=10_000))


def test_lissa_on_an_mlp_head_agrees_with_exact_on_the_output_layer():
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 1))
    feats = torch.randn(300, 8)
    y = torch.sin(feats[:, 0]) + 0.1 * torch.randn(300)
    hidden = head[:-1](feats).detach()
    flat = FlatModule(head[-1])
    split = lambda a, b: (hidden[a:b], y[a:b])  # noqa: E731
    args = (flat, flat.theta, split(0, 200), split(200, 240), split(240, 300))
    exact = influence_scores(*args, solver="exact", lissa=LissaSettings(damping=0.05))
    approx = influence_scores(*args, lissa=LissaSettings(depth=300, damping=0.05, repeats=2, batch_size=64))
    assert spearmanr(approx, exact).statistic > 0.95


def tiny_spec(**fixed):
    return parse_study({
        "name": "tiny-influence", "task": "property",
        "dataset": {"name": "nci-logp", "limit": 300, "split": "random",
                    "fractions": {"valid": 0.1, "test": 0.1, "pool": 0.3}},
        "model": {"name": "tiny-bert", "max_length": 64}, "search_space": "selection",
        "fixed": {"selection": "influence", **fixed}, "max_epochs": 2,
    })


CONFIG = {"selection": "influence", "batch_size": 32, "lr": 1e-3, "lissa_depth": 30}


def test_influence_trial_trains_on_train_plus_top_k_and_logs_the_selection(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEMTUNE_CACHE", str(tmp_path / "cache"))
    spec = tiny_spec(top_k=15)
    data = prepare_property(spec).payload
    reporter = NullReporter(keep_dir=tmp_path / "ckpt")
    final = train_property({**CONFIG, "top_k": 15}, data, spec, reporter)
    assert [h["n_train_rows"] for h in reporter.history] == [len(data.train) + 15] * 2
    assert final["influence_cache_hit"] == 0 and "test_rmse" in final
    table = pd.read_csv(tmp_path / "ckpt" / "selection.csv")
    assert len(table) == 15 and set(table["source"]) == {"pool"}
    assert set(table["smiles"]) <= set(data.pool.smiles)
    assert table["influence"].is_monotonic_increasing  # rank 1 = most negative influence
    assert len(list((tmp_path / "cache" / "influence").glob("*.npy"))) == 1


def test_scores_are_cached_so_top_k_only_changes_reuse_them(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEMTUNE_CACHE", str(tmp_path))
    spec = tiny_spec(top_k=10)
    data = prepare_property(spec).payload
    picks = {}
    for k in (10, 25):
        trainer = PropertyTrainer({**CONFIG, "top_k": k}, data, spec)
        selector = trainer.selector
        assert isinstance(selector, InfluenceSelector)
        selector.setup(trainer, NullReporter())
        picks[k] = (selector.selected, selector.stats["influence_cache_hit"])
    assert picks[10][1] == 0 and picks[25][1] == 1
    np.testing.assert_array_equal(picks[25][0][:10], picks[10][0])
    trainer = PropertyTrainer({**CONFIG, "top_k": 10, "lissa_depth": 31}, data, spec)
    trainer.selector.setup(trainer, NullReporter())
    assert trainer.selector.stats["influence_cache_hit"] == 0  # a LiSSA setting is part of the key


def test_phase1_leaves_the_trial_model_at_its_initial_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEMTUNE_CACHE", str(tmp_path))
    spec = tiny_spec(top_k=10)
    data = prepare_property(spec).payload
    trainer = PropertyTrainer({**CONFIG, "top_k": 10, "influence_train_on": "topk"}, data, spec)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.selector.setup(trainer, NullReporter())
    for k, v in trainer.model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    rows = trainer.selector.indices(0)
    assert len(rows) == 10 and (rows >= trainer.n_train).all()


def test_exact_solver_needs_a_small_subset():
    with pytest.raises(StudyError, match="head_out"):
        InfluenceSelector({"influence_solver": "exact", "influence_params": "head"})
