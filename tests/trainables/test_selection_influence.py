"""Influence selection: exact answers on a linear model, LiSSA against them, the cache, a trial."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
from transformers import BertConfig, BertModel

from studies.spec import parse_study
from tests.conftest import tiny_selection_study
from tests.support.dtypes import first_linear_dtypes
from trainables import NullReporter
from trainables.errors import StudyError
from trainables.methods import apply_method
from trainables.models.regression import HeadConfig, RegressionModel
from trainables.property.serving import PropertyPredictor
from trainables.property.task import PropertyTrainer, prepare_property, train_property
from trainables.selection.influence import (
    SUBSETS,
    FlatModule,
    InfluenceKnobs,
    InfluenceSelector,
    LissaSettings,
    PackedRegression,
    check_packed,
    exact_hessian,
    exact_ihvp,
    gnvp,
    hvp,
    influence_scores,
    lissa_ihvp,
    per_sample_dots,
    per_sample_grads,
    per_sample_grads_loop,
)
from trainables.spec import ResourcesSpec


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


def test_per_sample_dots_equal_the_per_sample_gradients_times_v(problem):
    theta, _, _, (x, y) = problem
    v = torch.randn(len(theta), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(per_sample_dots(linear, theta, x, y, v), per_sample_grads(linear, theta, x, y) @ v,
                               rtol=1e-5, atol=1e-5)


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


def test_gauss_newton_equals_the_hessian_of_a_linear_model(problem):
    theta, (x, y), _, _ = problem
    v = torch.randn(len(theta), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(gnvp(linear, theta, x, y, v), hvp(linear, theta, x, y, v), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gnvp(linear, theta, x, y, v), 2 * x.T @ (x @ v) / len(x), rtol=1e-5, atol=1e-6)


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
    return parse_study(tiny_selection_study("influence", limit=300, max_epochs=2, **fixed))


CONFIG = {"selection": "influence", "batch_size": 32, "lr": 1e-3, "lissa_depth": 30}


def test_influence_trial_trains_on_train_plus_top_k_and_logs_the_selection(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEMTUNE_CACHE", str(tmp_path / "cache"))
    spec = tiny_spec(top_k=15)
    data = prepare_property(spec).payload
    reporter = NullReporter(keep_dir=tmp_path / "ckpt")
    final = train_property({**CONFIG, "top_k": 15}, data, spec, reporter)
    n_target = round(0.1 * len(data.train))  # influence_target_fraction's default, held out of training
    assert final["influence_target_rows"] == n_target
    assert [h["n_train_rows"] for h in reporter.history] == [len(data.train) - n_target + 15] * 2
    assert final["influence_cache_hit"] == 0 and "test_rmse" in final
    assert len(pd.read_csv(tmp_path / "ckpt" / "influence_target.csv")) == n_target
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
        selector.setup(trainer.selection_context(), NullReporter())
        picks[k] = (selector.selected, selector.stats["influence_cache_hit"])
    assert picks[10][1] == 0 and picks[25][1] == 1
    np.testing.assert_array_equal(picks[25][0][:10], picks[10][0])
    trainer = PropertyTrainer({**CONFIG, "top_k": 10, "lissa_depth": 31}, data, spec)
    trainer.selector.setup(trainer.selection_context(), NullReporter())
    assert trainer.selector.stats["influence_cache_hit"] == 0  # a LiSSA setting is part of the key


def test_phase1_leaves_the_trial_model_at_its_initial_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEMTUNE_CACHE", str(tmp_path))
    spec = tiny_spec(top_k=10)
    data = prepare_property(spec).payload
    trainer = PropertyTrainer({**CONFIG, "top_k": 10, "influence_train_on": "topk"}, data, spec)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.selector.setup(trainer.selection_context(), NullReporter())
    for k, v in trainer.model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    rows = trainer.selector.indices(0)
    assert len(rows) == 10 and (rows >= trainer.n_train).all()


def test_exact_solver_needs_a_small_subset():
    with pytest.raises(StudyError, match="head_out"):
        InfluenceSelector({"influence_solver": "exact", "influence_params": "head"})


# -- subsets through the encoder ------------------------------------------------------------------

def small_regression(method: str, hidden: int = 16, head_hidden: int = 4, seed: int = 0) -> RegressionModel:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=2 * hidden)
    backbone = apply_method(method, BertModel(cfg, add_pooling_layer=False),
                            {"lora_r": 1, "lora_alpha": 2, "lora_dropout": 0.0})
    return RegressionModel(backbone, HeadConfig(hidden_size=hidden, head_hidden=head_hidden, head_dropout=0.0)).eval()


def token_data(n: int, seed: int) -> tuple[list[list[int]], torch.Tensor]:
    """Sequences of 3..15 tokens (so batches carry padding) and a target that depends on them."""
    gen = torch.Generator().manual_seed(seed)
    ids = [torch.randint(5, 30, (int(k),), generator=gen).tolist() for k in torch.randint(3, 16, (n,), generator=gen)]
    return ids, torch.tensor([np.mean(s) / 10 - 1.5 + len(s) / 100 for s in ids], dtype=torch.float32)


def scorer(model: RegressionModel, subset: str, **knobs) -> FlatModule:
    scored = copy.deepcopy(model)
    scored.backbone.set_attn_implementation("eager")
    names = SUBSETS.get(subset).names(scored, InfluenceKnobs(influence_params=subset, **knobs))
    return FlatModule(PackedRegression(scored).eval(), [f"model.{n}" for n in names])


@pytest.mark.parametrize(("method", "subset", "layers"), [
    ("lora", "peft", 1), ("bitfit", "peft", 1), ("full", "last_layers", 1), ("lora", "last_layers", 2),
])
def test_per_sample_grads_through_the_encoder_equal_autograd_on_the_ordinary_forward(method, subset, layers):
    model = small_regression(method)
    for p in model.parameters():  # LoRA's B starts at zero; move off it so every gradient is informative
        p.data.add_(0.05 * torch.randn_like(p))
    flat = scorer(model, subset, influence_layers=layers)
    ids, y = token_data(12, seed=1)
    packed = PackedRegression.trim(PackedRegression.pack(ids, 0))
    batched = per_sample_grads(flat, flat.theta, packed, y)
    v = torch.randn(flat.theta.numel(), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(per_sample_dots(flat, flat.theta, packed, y, v), batched @ v, rtol=1e-4, atol=1e-5)
    params = dict(model.named_parameters())
    trained = {f"model.{n}" for n, p in model.named_parameters() if p.requires_grad}
    wanted = [params[n.removeprefix("model.")].requires_grad_(True) for n in flat.names]  # frozen ones too
    for i, seq in enumerate(ids):  # one unpadded molecule at a time, the 2D mask, SDPA: the training forward
        pred = model(torch.tensor([seq]), torch.ones(1, len(seq), dtype=torch.long))
        expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(((pred[0] - y[i]) ** 2), wanted)])
        torch.testing.assert_close(batched[i], expected, rtol=1e-4, atol=1e-6)
    layer_names = {n.split(".layer.")[1].split(".")[0] for n in flat.names if ".layer." in n}
    if subset == "last_layers":
        assert layer_names == {"1"} if layers == 1 else {"0", "1"}
        assert any("lora_" in n for n in flat.names) == (method == "lora")
    else:  # exactly what the method trains in the encoder, plus the head
        assert set(flat.names) == trained


def test_lissa_through_the_encoder_ranks_like_exact():
    model = small_regression("lora")
    train, valid, pool = [(PackedRegression.pack(i, 0), y) for i, y in (token_data(n, s) for n, s in ((80, 2), (30, 3), (60, 4)))]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(150):  # phase 1: near a minimum, where the damped Hessian is positive definite
        optimizer.zero_grad()
        ((PackedRegression(model)(train[0]) - train[1]) ** 2).mean().backward()
        optimizer.step()
    flat = scorer(model, "peft")
    args = (flat, flat.theta, train, valid, pool)
    hessian = LissaSettings(damping=0.5, curvature="hessian")
    exact = influence_scores(*args, solver="exact", lissa=hessian, prepare=PackedRegression.trim)
    approx = influence_scores(*args, lissa=replace(hessian, depth=150, batch_size=16),
                              prepare=PackedRegression.trim)
    assert spearmanr(approx, exact).statistic > 0.95
    assert np.linalg.norm(approx - exact) / np.linalg.norm(exact) < 0.2


def test_gauss_newton_is_positive_semidefinite_where_the_hessian_is_not_and_lissa_follows_it():
    model = small_regression("lora", seed=3)
    train, valid, pool = [(PackedRegression.pack(i, 0), y) for i, y in (token_data(n, s) for n, s in ((60, 5), (20, 6), (40, 7)))]
    for p in model.parameters():  # far from any minimum: the Hessian has negative eigenvalues
        p.data.add_(0.3 * torch.randn_like(p))
    flat = scorer(model, "peft")
    trim = PackedRegression.trim
    hessian_low = torch.linalg.eigvalsh(exact_hessian(flat, flat.theta, *train, prepare=trim))[0]
    ggn = torch.linalg.eigvalsh(exact_hessian(flat, flat.theta, *train, prepare=trim, curvature="gauss_newton"))
    assert hessian_low < -1e-3 and ggn[0] > -1e-6 * ggn[-1]
    args = (flat, flat.theta, train, valid, pool)
    exact = influence_scores(*args, solver="exact", lissa=LissaSettings(damping=0.05, curvature="gauss_newton"),
                             prepare=trim)
    approx = influence_scores(*args, lissa=LissaSettings(depth=150, damping=0.05, batch_size=20, curvature="gauss_newton"),
                              prepare=trim)
    assert spearmanr(approx, exact).statistic > 0.9
    with pytest.raises(StudyError, match="relative residual .* use influence_curvature 'gauss_newton'"):
        # on the indefinite Hessian the recursion grows without overflowing: the residual check refuses it
        influence_scores(*args, lissa=LissaSettings(depth=100, damping=1e-3, batch_size=60, curvature="hessian"),
                         prepare=trim)


@pytest.mark.parametrize(("method", "subset", "extra"), [("lora", "peft", {}), ("full", "last_layers", {"influence_layers": 1})])
def test_encoder_subset_trial_selects_and_reports_its_size(tmp_path, monkeypatch, method, subset, extra):
    monkeypatch.setenv("CHEMTUNE_CACHE", str(tmp_path / "cache"))
    spec = tiny_spec(top_k=12)
    data = prepare_property(spec).payload
    config = {**CONFIG, "method": method, "top_k": 12, "influence_params": subset, "lissa_batch": 32, **extra}
    trainer = PropertyTrainer(config, data, spec)
    trial_weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.selector.setup(trainer.selection_context(), NullReporter())
    model = trainer.accelerator.unwrap_model(trainer.model)
    expected = sum(p.numel() for n, p in model.named_parameters()
                   if n in SUBSETS.get(subset).names(model, trainer.selector.knobs))
    assert trainer.selector.stats["influence_params"] == expected
    assert expected < trainer.n_total and (subset != "peft" or expected == trainer.n_trainable)
    assert len(trainer.selector.selected) == 12 and (trainer.selector.selected >= trainer.n_train).all()
    assert np.all(np.diff(trainer.selector.scores) >= 0)
    for k, v in model.state_dict().items():  # scoring's eager copy left the trial model alone
        torch.testing.assert_close(v, trial_weights[k])
    assert model.backbone.config._attn_implementation == "sdpa"


@pytest.mark.parametrize(("config", "message"), [
    ({"influence_params": "last_layers", "influence_layers": 3}, "more than the encoder's 2 layers"),
    ({"influence_params": "last_layers", "influence_solver": "exact"}, "more than the 5000 an explicit Hessian"),
])
def test_encoder_subsets_that_do_not_apply_fail_before_phase_1(tmp_path, monkeypatch, config, message):
    monkeypatch.setenv("CHEMTUNE_CACHE", str(tmp_path))
    spec = tiny_spec(top_k=10)
    trainer = PropertyTrainer({**CONFIG, "top_k": 10, **config}, prepare_property(spec).payload, spec)
    calls = []
    monkeypatch.setattr(trainer, "train_epoch", lambda *a, **k: calls.append(1))
    with pytest.raises(StudyError, match=message):
        trainer.selector.setup(trainer.selection_context(), NullReporter())
    assert calls == []


def test_an_encoder_that_does_not_take_the_4d_mask_fails_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEMTUNE_CACHE", str(tmp_path))
    spec = tiny_spec(top_k=10)
    trainer = PropertyTrainer({**CONFIG, "top_k": 10, "influence_params": "last_layers"}, prepare_property(spec).payload,
                              spec)
    ordinary = PackedRegression.forward
    monkeypatch.setattr(PackedRegression, "forward", lambda self, x: ordinary(self, x) + 0.5)  # mask ignored, say
    calls = []
    monkeypatch.setattr(trainer, "train_epoch", lambda *a, **k: calls.append(1))
    with pytest.raises(StudyError, match="does not take .*differ by up to 0.5.*use 'head' or 'head_out'"):
        trainer.selector.setup(trainer.selection_context(), NullReporter())
    assert calls == []  # before phase 1


def test_a_base_model_uri_encoder_is_checked_and_scored_without_phase_1(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEMTUNE_CACHE", str(tmp_path / "cache"))
    spec = tiny_spec(top_k=10)
    data = prepare_property(spec).payload
    PropertyTrainer({**CONFIG, "top_k": 10}, data, spec).export(tmp_path / "base")
    spec = parse_study(tiny_selection_study("influence", limit=300, max_epochs=2, top_k=10)
                       | {"options": {"base_model_uri": str(tmp_path / "base")}})
    config = {**CONFIG, "top_k": 10, "influence_params": "last_layers", "lissa_batch": 32}
    trainer = PropertyTrainer(config, data, spec)
    calls = []
    monkeypatch.setattr(trainer, "train_epoch", lambda *a, **k: calls.append(1))
    trainer.selector.setup(trainer.selection_context(), NullReporter())  # the merged saved model: every weight of the top layer + head
    assert calls == [] and len(trainer.selector.selected) == 10
    loaded = PropertyPredictor.load(tmp_path / "base").model
    top = sum(p.numel() for n, p in loaded.named_parameters() if n.startswith(("backbone.encoder.layer.1.", "head.")))
    assert trainer.selector.stats["influence_params"] == top
    ordinary = PackedRegression.forward
    monkeypatch.setattr(PackedRegression, "forward", lambda self, x: ordinary(self, x) + 0.5)
    trainer = PropertyTrainer(config, data, spec)
    with pytest.raises(StudyError, match="does not take .*use 'head' or 'head_out'"):
        trainer.selector.setup(trainer.selection_context(), NullReporter())


def test_the_4d_mask_check_passes_under_bf16_autocast(tmp_path, monkeypatch):
    """resources.precision bf16: Accelerate wraps the prepared model's forward in bf16 autocast while the
    packed encoder runs in fp32; the check compares the two paths at the same (fp32) precision."""
    monkeypatch.setenv("CHEMTUNE_CACHE", str(tmp_path))
    spec = tiny_spec(top_k=10).model_copy(update={"resources": ResourcesSpec(precision="bf16")})
    trainer = PropertyTrainer({**CONFIG, "top_k": 10, "influence_params": "last_layers"}, prepare_property(spec).payload,
                              spec)
    trainer.model = trainer.accelerator.prepare(trainer.model)  # as fit() does: its forward now autocasts
    assert trainer.accelerator.mixed_precision == "bf16"
    model, ids = trainer.unwrapped(), trainer.data.valid.smiles[:4]
    with first_linear_dtypes(model.backbone) as seen:
        check_packed(model, trainer.encode(ids), trainer.tokenizer.pad_token_id, "last_layers")  # raises if off
    # both paths in fp32: a bf16 ordinary forward differs from the fp32 packed one by ~2e-4 on a trained
    # rxnfp-bert, past the check's tolerance (seen in the CPU paper run); a random tiny-bert hides it
    assert seen == [torch.float32, torch.float32]
