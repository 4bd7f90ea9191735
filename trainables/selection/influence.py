"""Influence-function selection (Koh & Liang 2017) with a LiSSA inverse-Hessian-vector product.

Phase 1 gives a fine-tuned model (trained inside the trial on the train split, or a registered
MLflow model: task option ``base_model_uri``). Phase 2 scores every pool molecule z by its
influence on the validation loss, ``I(z) = -grad L_valid^T (H + damping I)^-1 grad L(z)``, over a
parameter subset that keeps it tractable (:data:`SUBSETS`): the regression head or its output
layer (scored on frozen pooled embeddings, cheap), or, through the encoder, the parameters the
fine-tuning method trains (PEFT adapters, BitFit biases) or the last N encoder layers, each with
the head. The pool's per-sample gradient dot products are batched, never a loop over molecules:
``torch.func.vmap(grad(...))`` through the encoder, one forward-mode ``jvp`` of the per-sample
losses on the head (measured faster for each). The Hessian is never formed for LiSSA
(Hessian-vector products by forward-over-reverse ``jvp``), and formed explicitly only by the exact
solver, for small subsets. ``H`` is by default the Gauss-Newton matrix (``influence_curvature``):
a fine-tuned network is not convex, and with the true Hessian the damping must exceed its most
negative eigenvalue (about -0.2 for the head after one epoch on Lipophilicity), or LiSSA diverges;
a diverged estimate is refused, never ranked. Phase 3 trains on train + the ``top_k`` most helpful
(most negative ``I(z)``) pool molecules, or on those alone.

Scores are cached on disk by content (model weights, inputs, labels, subset, solver settings), so
trials that differ only in ``top_k`` do not recompute them.

The core functions take any ``predict(theta, x) -> [B]`` with flat parameters ``theta``; the tests
check them on a linear model, where the exact influence has a closed form, and through the encoder
against per-sample autograd on the ordinary forward.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from trainables.cache import cache_dir
from trainables.errors import DataError, StudyError
from trainables.io import atomic_path
from trainables.registry import Registry
from trainables.models.regression import RegressionModel, masked_mean, pad_batch
from trainables.knobs import Search
from trainables.selection.common import Knobs, embed_ids, write_selection_csv
from trainables.selectors import SELECTORS

if TYPE_CHECKING:
    from trainables.base import Reporter
    from trainables.property import PropertyTrainer

__all__ = [
    "InfluenceKnobs", "InfluenceSelector", "LissaSettings", "SUBSETS", "Subset", "FlatModule", "PackedRegression",
    "CURVATURES", "encoder_layers", "mean_grad", "per_sample_grads", "per_sample_grads_loop", "per_sample_dots",
    "per_sample_dots_vmap", "hvp", "gnvp",
    "lissa_ihvp", "exact_hessian", "exact_ihvp", "influence_scores", "pool_influence",
]

Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Prepare = Callable[[torch.Tensor], torch.Tensor]

EXACT_MAX_PARAMS = 5000  # an explicit P x P Hessian beyond this is the wrong tool


# -- the math, on flat parameters ----------------------------------------------------------------

def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def _sample_loss(predict: Predict, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (predict(theta, x.unsqueeze(0))[0] - y) ** 2


def mean_loss(predict: Predict, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``predict`` (the training objective, in standardized units)."""
    return ((predict(theta, x) - y) ** 2).mean()


def _batches(x: torch.Tensor, y: torch.Tensor, size: int, prepare: Prepare):
    """``(prepare(x_chunk), y_chunk, weight)`` over ``x``; the weights (chunk share) sum to 1."""
    n = len(x)
    for start in range(0, n, size):
        yield prepare(x[start : start + size]), y[start : start + size], min(size, n - start) / n


def mean_grad(predict: Predict, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, chunk: int = 512,
              prepare: Prepare = _same) -> torch.Tensor:
    """Gradient of the mean loss over ``(x, y)``, summed over chunks so memory stays at one chunk."""
    return sum(w * grad(mean_loss, argnums=1)(predict, theta, xc, yc) for xc, yc, w in _batches(x, y, chunk, prepare))


def per_sample_grads(predict: Predict, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradients of each sample's loss [N, P], in one batched ``vmap(grad)`` call."""
    return vmap(grad(_sample_loss, argnums=1), in_dims=(None, None, 0, 0))(predict, theta, x, y)


def per_sample_grads_loop(predict: Predict, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The same as :func:`per_sample_grads` by one autograd call per sample (the benchmark's baseline)."""
    out = torch.empty(len(x), theta.numel(), dtype=theta.dtype, device=theta.device)
    for i in range(len(x)):
        t = theta.detach().requires_grad_(True)
        (out[i],) = torch.autograd.grad(_sample_loss(predict, t, x[i], y[i]), t)
    return out


def per_sample_dots(predict: Predict, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                    v: torch.Tensor) -> torch.Tensor:
    """``grad L(z_i)^T v`` for every sample [N], by one forward-mode ``jvp`` of the per-sample losses.

    The directional derivative of each sample's loss along ``v`` is exactly its gradient's dot
    product with ``v``: what influence scoring needs, at about the cost of a forward pass and
    without the [N, P] per-sample gradients of :func:`per_sample_grads`.
    """
    return jvp(lambda t: (predict(t, x) - y) ** 2, (theta,), (v,))[1]


def per_sample_dots_vmap(predict: Predict, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                         v: torch.Tensor) -> torch.Tensor:
    """:func:`per_sample_dots` through the [N, P] per-sample gradients (``vmap``): faster than forward
    mode where the subset sits deep in the network (PEFT adapters in every layer)."""
    return per_sample_grads(predict, theta, x, y) @ v


Dots = Callable[[Predict, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def hvp(predict: Predict, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Hessian of the mean loss on ``(x, y)`` times ``v`` (forward-over-reverse, no Hessian formed)."""
    return jvp(lambda t: grad(mean_loss, argnums=1)(predict, t, x, y), (theta,), (v,))[1]


def gnvp(predict: Predict, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Gauss-Newton matrix of the mean squared error times ``v``: ``(2/n) J^T (J v)``.

    Positive semi-definite, unlike the Hessian of a fine-tuned network, so LiSSA converges with any
    positive damping; it equals the Hessian where the model is linear in ``theta``.
    """
    jv = jvp(lambda t: predict(t, x), (theta,), (v,))[1]
    _, pullback = vjp(lambda t: predict(t, x), theta)
    return pullback(2.0 * jv / len(x))[0]


Curvature = Literal["hessian", "gauss_newton"]
CURVATURES: dict[str, Callable[..., torch.Tensor]] = {"hessian": hvp, "gauss_newton": gnvp}


@dataclass(frozen=True)
class LissaSettings:
    """LiSSA (Agarwal et al. 2017) for ``(H + damping I)^-1 v``.

    The recursion ``h <- v + h - (H_b h + damping h) / scale`` over ``depth`` mini-batch Hessians
    ``H_b`` converges to ``scale (H + damping I)^-1 v`` when ``scale`` exceeds the largest eigenvalue
    of ``H + damping I``; ``repeats`` independent estimates are averaged.

    Attributes:
        depth: Recursion depth.
        scale: Scale; ``None`` picks 1.5x the largest eigenvalue (power iteration on up to
            ``2 * batch_size`` train samples).
        damping: Added to the Hessian's diagonal (makes it positive definite for non-convex losses).
        repeats: Independent estimates averaged.
        batch_size: Train samples per Hessian-vector product (the whole train set if larger).
        seed: Seed of the mini-batch draws.
        curvature: ``gauss_newton`` (positive semi-definite, the default: LiSSA converges), or the
            ``hessian`` (indefinite on a fine-tuned network: needs damping above its most negative
            eigenvalue, else the recursion diverges and is refused). Used by both solvers.
    """

    depth: int = 100
    scale: float | None = None
    damping: float = 0.01
    repeats: int = 1
    batch_size: int = 64
    seed: int = 0
    curvature: Curvature = "gauss_newton"


def _top_eigenvalue(predict: Predict, theta: torch.Tensor, batches: list[tuple[torch.Tensor, torch.Tensor, float]],
                    product: Callable[..., torch.Tensor] = hvp, iters: int = 20) -> float:
    v = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(0), dtype=theta.dtype).to(theta.device)
    v = v / v.norm()
    value = 0.0
    for _ in range(iters):
        hv = sum(w * product(predict, theta, xb, yb, v) for xb, yb, w in batches)
        value = float(v @ hv)
        norm = hv.norm()
        if norm == 0:
            break
        v = hv / norm
    return abs(value)


def lissa_ihvp(predict: Predict, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor,
               settings: LissaSettings, prepare: Prepare = _same) -> torch.Tensor:
    """Approximate ``(H + damping I)^-1 v`` for the mean loss on the train set ``(x, y)``.

    Raises:
        StudyError: The recursion diverged (``scale`` too small for the Hessian).
    """
    s = settings
    product = CURVATURES[s.curvature]
    gen = torch.Generator().manual_seed(s.seed)
    n, b = len(x), min(s.batch_size, len(x))
    if s.scale is None:
        sample = torch.randperm(n, generator=gen)[: 2 * b]  # an upper bound is all the scale needs (1.5x margin)
        top = _top_eigenvalue(predict, theta, list(_batches(x[sample], y[sample], b, prepare)), product)
        scale = 1.5 * (top + s.damping) + 1e-8
    else:
        scale = s.scale
    full = list(_batches(x, y, n, prepare)) if b == n else None  # one prepared batch, reused every step
    total = torch.zeros_like(v)
    for _ in range(s.repeats):
        h = v.clone()
        for _ in range(s.depth):
            if full is None:
                idx = torch.randperm(n, generator=gen)[:b]
                xb, yb = prepare(x[idx]), y[idx]
            else:
                xb, yb, _ = full[0]
            h = v + h - (product(predict, theta, xb, yb, h) + s.damping * h) / scale
        if not torch.isfinite(h).all() or h.norm() > 1e6 * (v.norm() * s.depth + 1):
            raise StudyError(
                f"LiSSA diverged (scale {scale:g}, damping {s.damping:g}); raise lissa_scale or lissa_damping"
            )
        total += h / scale
    estimate = total / s.repeats
    # A slow divergence (curvature below -damping) stays finite but is no answer: an estimate whose
    # residual on the whole train set exceeds that of the trivial answer 0 (relative residual 1) is
    # refused. With positive semi-definite curvature a truncated recursion always stays below 1.
    residual = sum(w * product(predict, theta, xb, yb, estimate) for xb, yb, w in _batches(x, y, b, prepare))
    residual = residual + s.damping * estimate - v
    relative = float(residual.norm() / v.norm().clamp_min(1e-30))
    if not relative <= 1.0:
        raise StudyError(
            f"LiSSA diverged: relative residual {relative:.2f} > 1 (scale {scale:g}, damping {s.damping:g}); the "
            f"{s.curvature} has eigenvalues below -damping: raise lissa_damping or use influence_curvature 'gauss_newton'"
        )
    return estimate


def exact_hessian(predict: Predict, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, chunk: int = 512,
                  prepare: Prepare = _same, curvature: Curvature = "hessian") -> torch.Tensor:
    """The Hessian (or Gauss-Newton matrix) of the mean loss [P, P] (float64, CPU), symmetrized; small subsets only.

    Built from Hessian-vector products with the unit vectors, batched (``vmap``) in blocks of
    columns and summed over train chunks, so no autograd graph larger than one chunk is kept.

    Raises:
        StudyError: More than ``EXACT_MAX_PARAMS`` parameters.
    """
    p = theta.numel()
    if p > EXACT_MAX_PARAMS:
        raise StudyError(f"exact influence needs at most {EXACT_MAX_PARAMS} parameters, the subset has {p}; "
                         "use influence_solver 'lissa' or a smaller influence_params")
    eye = torch.eye(p, dtype=theta.dtype, device=theta.device)
    batches = list(_batches(x, y, chunk, prepare))
    product = CURVATURES[curvature]
    columns = []
    for start in range(0, p, 256):
        block = eye[start : start + 256]
        columns.append(sum(w * vmap(lambda u, xb=xb, yb=yb: product(predict, theta, xb, yb, u))(block)
                           for xb, yb, w in batches))
    h = torch.cat(columns).double().cpu()
    return (h + h.T) / 2


def exact_ihvp(predict: Predict, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor,
               damping: float, chunk: int = 512, prepare: Prepare = _same, curvature: Curvature = "hessian"
               ) -> torch.Tensor:
    """``(H + damping I)^-1 v`` with the explicit Hessian (:func:`exact_hessian`), solved in float64."""
    h = exact_hessian(predict, theta, x, y, chunk, prepare, curvature)
    h = h + damping * torch.eye(len(h), dtype=h.dtype)
    return torch.linalg.solve(h, v.double().cpu()).to(v.dtype).to(v.device)


def influence_scores(predict: Predict, theta: torch.Tensor, train: tuple[torch.Tensor, torch.Tensor],
                     valid: tuple[torch.Tensor, torch.Tensor], pool: tuple[torch.Tensor, torch.Tensor],
                     solver: Literal["lissa", "exact"] = "lissa", lissa: LissaSettings = LissaSettings(),
                     chunk: int = 512, prepare: Prepare = _same, dots: Dots = per_sample_dots) -> np.ndarray:
    """``I(z) = -grad L_valid^T (H + damping I)^-1 grad L(z)`` for every pool sample z.

    Negative scores: up-weighting z lowers the validation loss. The inverse-HVP is computed once
    (for the validation gradient); the pool's gradient dot products come in batched chunks, so the
    cost is linear in the pool size.

    Args:
        predict: ``predict(theta, x) -> [B]`` predictions.
        theta: Flat parameters of the subset [P].
        train, valid, pool: ``(inputs, targets)`` pairs; train defines the Hessian.
        solver: ``lissa`` or ``exact``.
        lissa: LiSSA settings (``damping`` and ``curvature`` are used by both solvers).
        chunk: Samples per batched gradient call.
        prepare: Applied to every batch of inputs before ``predict`` (e.g. trimming padding).
        dots: How the pool's gradient dot products are batched: forward mode (default) or ``vmap``.

    Returns:
        Scores [len(pool)].
    """
    theta = theta.detach()
    g_valid = mean_grad(predict, theta, *valid, chunk=chunk, prepare=prepare)
    if solver == "exact":
        s_test = exact_ihvp(predict, theta, *train, g_valid, lissa.damping, chunk=chunk, prepare=prepare,
                            curvature=lissa.curvature)
    else:
        s_test = lissa_ihvp(predict, theta, *train, g_valid, lissa, prepare=prepare)
    return pool_influence(predict, theta, pool, s_test, chunk, prepare, dots)


def pool_influence(predict: Predict, theta: torch.Tensor, pool: tuple[torch.Tensor, torch.Tensor],
                   s_test: torch.Tensor, chunk: int = 512, prepare: Prepare = _same,
                   dots: Dots = per_sample_dots) -> np.ndarray:
    """``-grad L(z)^T s_test`` for every pool sample, batched in chunks."""
    out = np.empty(len(pool[0]), dtype=np.float64)
    start = 0
    for xc, yc, _ in _batches(*pool, chunk, prepare):
        out[start : start + len(yc)] = (-dots(predict, theta, xc, yc, s_test)).double().cpu().numpy()
        start += len(yc)
    return out


# -- parameter subsets of the regression model ---------------------------------------------------

class FlatModule:
    """A module as ``predict(theta, x) -> [B]`` over a flat vector of some of its parameters.

    ``names`` picks the parameters in ``theta`` (default: all); the others stay as they are in the
    module (``functional_call`` fills in what the dict leaves out).
    """

    def __init__(self, module: nn.Module, names: Sequence[str] | None = None) -> None:
        self.module = module.requires_grad_(False)
        params = dict(module.named_parameters())
        self.names = list(params) if names is None else list(names)
        self.shapes = [params[n].shape for n in self.names]
        self.sizes = [params[n].numel() for n in self.names]
        self.theta = torch.cat([params[n].detach().float().reshape(-1) for n in self.names])

    def __call__(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        params = {n: t.view(s) for n, t, s in zip(self.names, theta.split(self.sizes), self.shapes)}
        return functional_call(self.module, params, (x,)).reshape(len(x))


class PackedRegression(nn.Module):
    """A :class:`RegressionModel` on packed inputs ``x`` [B, 2, T] (token ids; attention mask).

    The encoder gets a 4D additive mask: from a 2D mask, transformers' mask code branches on the
    data (``.all()``), which ``vmap`` cannot trace. One tensor per sample keeps ``predict(theta, x)``.
    """

    def __init__(self, model: "RegressionModel") -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = x[:, 0], x[:, 1]
        additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        hidden = self.model.backbone(input_ids=ids, attention_mask=additive).last_hidden_state
        return self.model.head(masked_mean(hidden, mask).float()).squeeze(-1)

    @staticmethod
    def pack(ids: list[list[int]], pad_id: int) -> torch.Tensor:
        """Token-id sequences as one padded tensor [N, 2, T]."""
        return torch.stack(pad_batch(ids, pad_id), dim=1)

    @staticmethod
    def trim(x: torch.Tensor) -> torch.Tensor:
        """Drop the padding columns that no row of this batch needs (right padding)."""
        return x[..., : int(x[:, 1].sum(1).max())]


@torch.no_grad()
def _check_packed(model: "RegressionModel", ids: list[list[int]], pad_id: int, subset: str) -> None:
    """Fail clearly if the encoder does not take :class:`PackedRegression`'s 4D mask (remote code may not)."""
    device, was_training = next(model.parameters()).device, model.training
    input_ids, mask = pad_batch(ids, pad_id)
    why = ""
    try:
        expected = model.eval()(input_ids.to(device), mask.to(device))
        got = PackedRegression(model)(PackedRegression.pack(ids, pad_id).to(device))
        if not torch.allclose(got, expected, rtol=1e-3, atol=1e-4):
            why = f"its predictions differ by up to {float((got - expected).abs().max()):.3g}"
    except Exception as err:  # noqa: BLE001 - any failure here means the same thing
        why = f"{type(err).__name__}: {err}"
    finally:
        model.train(was_training)
    if why:
        raise StudyError(f"influence_params {subset!r} runs the encoder with a 4D additive attention mask, which "
                         f"this encoder does not take ({why}); use 'head' or 'head_out'")


def _head(model: "RegressionModel", knobs: "InfluenceKnobs") -> list[str]:
    return [n for n, _ in model.named_parameters() if n.startswith("head.")]


def _head_out(model: "RegressionModel", knobs: "InfluenceKnobs") -> list[str]:
    last = f"head.{len(model.head) - 1}."
    return [n for n, _ in model.named_parameters() if n.startswith(last)]


def _peft(model: "RegressionModel", knobs: "InfluenceKnobs") -> list[str]:
    # what the optimiser moves in the encoder: adapters (LoRA, IA3), biases (BitFit); everything for 'full'
    # or a base_model_uri model (adapters merged), which is correct but slow
    return [f"backbone.{n}" for n, p in model.backbone.named_parameters() if p.requires_grad] + _head(model, knobs)


def encoder_layers(backbone: nn.Module) -> tuple[str, nn.ModuleList]:
    """The backbone's stack of transformer blocks: its longest ``nn.ModuleList`` (``encoder.layer`` in BERT)."""
    lists = [(n, m) for n, m in backbone.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise StudyError("influence_params 'last_layers': the encoder has no list of layers")
    return max(lists, key=lambda item: len(item[1]))


def _last_layers(model: "RegressionModel", knobs: "InfluenceKnobs") -> list[str]:
    prefix, layers = encoder_layers(model.backbone)
    n = knobs.influence_layers
    if n > len(layers):
        raise StudyError(f"influence_layers {n} is more than the encoder's {len(layers)} layers")
    starts = tuple(f"backbone.{prefix}.{i}." for i in range(len(layers) - n, len(layers)))
    # every weight of those layers, whatever the method trains (PEFT wrappers keep the base weights there too)
    return [name for name, _ in model.named_parameters() if name.startswith(starts)] + _head(model, knobs)


@dataclass(frozen=True)
class Subset:
    """Which parameters of a :class:`RegressionModel` influence is taken over.

    Attributes:
        names: ``(model, knobs) -> parameter names`` (raises :class:`StudyError` when it does not apply).
        encoder: Whether some lie in the encoder: then per-sample gradients run through it on token ids;
            otherwise on the frozen pooled embeddings (much cheaper).
    """

    names: Callable[["RegressionModel", "InfluenceKnobs"], list[str]]
    encoder: bool


SUBSETS: Registry[Subset] = Registry("influence parameter subset")
SUBSETS.register("head", Subset(_head, encoder=False), help="the whole regression head (MLP)")
SUBSETS.register("head_out", Subset(_head_out, encoder=False),
                 help="the head's output layer only (small enough for the exact solver)")
SUBSETS.register("peft", Subset(_peft, encoder=True),
                 help="what the method trains in the encoder (LoRA / IA3 adapters, BitFit biases; all for 'full') + the head")
SUBSETS.register("last_layers", Subset(_last_layers, encoder=True),
                 help="the last influence_layers encoder layers + the head")


# -- the selector ------------------------------------------------------------------------------------

class InfluenceKnobs(Knobs):
    """Knobs of ``selection: influence`` (trial config keys)."""

    pool_knobs: ClassVar[tuple[str, ...]] = ("top_k",)

    # Declaration order is the search order: a knob's ``when`` names earlier ones.
    top_k: Annotated[int, Search(16, 2048, log=True)] = Field(
        100, ge=1, description="pool molecules added by influence (the most helpful)")
    influence_train_on: Annotated[Literal["train+topk", "topk"], Search(choices=("train+topk", "topk"))] = Field(
        "train+topk", description="phase 3 trains on train + top-k, or on the top-k alone")
    influence_params: Annotated[str, Search(choices=SUBSETS.names)] = Field(
        "head", description="parameter subset the influence is taken over: " + ", ".join(SUBSETS.names()))
    influence_layers: Annotated[int, Search(1, 4, when={"influence_params": ["last_layers"]})] = Field(
        1, ge=1, description="encoder layers, from the top, in the 'last_layers' subset")
    influence_solver: Annotated[Literal["lissa", "exact"], Search(choices=("lissa", "exact"),
                                                                  when={"influence_params": ["head_out"]})] = Field(
        "lissa", description="inverse-HVP by LiSSA, or the explicit Hessian (small subsets)")
    influence_curvature: Annotated[Curvature, Search(choices=("gauss_newton", "hessian"))] = Field(
        "gauss_newton", description="Gauss-Newton matrix (positive semi-definite), or the Hessian "
                                    "(needs damping above its lowest eigenvalue)")
    lissa_depth: Annotated[int, Search(50, 500, log=True)] = Field(100, ge=1, description="LiSSA recursion depth")
    lissa_damping: Annotated[float, Search(1e-3, 1.0, log=True)] = Field(
        0.01, ge=0, description="damping added to the Hessian before inversion")
    influence_epochs: int = Field(1, ge=1, description="phase-1 epochs on the train split (no base_model_uri)")
    lissa_scale: float | None = Field(None, gt=0, description="LiSSA scale (default: 1.5x top Hessian eigenvalue)")
    lissa_repeats: int = Field(1, ge=1, description="LiSSA estimates averaged")
    lissa_batch: int = Field(64, ge=1, description="train samples per Hessian-vector product")

    def pool_demand(self) -> int:
        return self.top_k

    @model_validator(mode="after")
    def _consistent(self) -> "InfluenceKnobs":
        SUBSETS.get(self.influence_params)
        if self.influence_solver == "exact" and self.influence_params == "head":
            raise ValueError("influence_solver 'exact' forms the Hessian explicitly, too big for the whole head; "
                             "use influence_params 'head_out' (or a small 'peft' subset)")
        return self

    def lissa(self, seed: int) -> LissaSettings:
        return LissaSettings(self.lissa_depth, self.lissa_scale, self.lissa_damping, self.lissa_repeats,
                             self.lissa_batch, seed, self.influence_curvature)


def _content_key(tensors: list[torch.Tensor], settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for t in tensors:
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes())  # any dtype
    return digest.hexdigest()[:32]


def _load_base_model(uri: str):
    """A saved property model from an MLflow model/artifact URI or a local directory."""
    from trainables.serving import PropertyPredictor

    path = Path(uri)
    if not path.exists():
        import mlflow

        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    found = sorted(p.parent for p in path.rglob("head.json"))
    if not found:
        raise DataError(f"{uri}: no saved property model (head.json) inside (task option base_model_uri)")
    return PropertyPredictor.load(found[0])


class InfluenceSelector:
    """Phase 1 model, influence scores of the pool, then train on train + top-k (or top-k only)."""

    knobs = InfluenceKnobs
    check_study = InfluenceKnobs.check_study

    def __init__(self, config: dict[str, Any]) -> None:
        self.knobs = InfluenceKnobs.from_config(config, where="selection 'influence'")
        self.n_train = 0
        self.selected = np.zeros(0, dtype=np.int64)
        self.scores = np.zeros(0)
        self.stats: dict[str, float] = {}

    def setup(self, trainer: "PropertyTrainer", reporter: "Reporter", state: dict[str, Any] | None = None) -> None:
        self.n_train = trainer.n_train
        if state is not None:
            self.load_state_dict(state)
            return
        n_pool = len(trainer.candidates) - trainer.n_train
        if n_pool == 0:
            raise StudyError("selection 'influence': the pool is empty")
        if self.knobs.top_k > n_pool:
            raise StudyError(f"selection 'influence': top_k {self.knobs.top_k} is larger than the pool ({n_pool})")
        model = trainer.accelerator.unwrap_model(trainer.model)
        self._subset_names(model)  # a subset that does not apply fails now, before phase 1 trains
        if SUBSETS.get(self.knobs.influence_params).encoder and not trainer.spec.options.get("base_model_uri"):
            _check_packed(model, trainer.ids["valid"][:4], trainer.tokenizer.pad_token_id, self.knobs.influence_params)
        tic = time.perf_counter()
        model, inputs = self._phase1(trainer)
        phase1 = time.perf_counter() - tic
        scores, hit, n_params = self._scores(trainer, model, inputs)
        order = np.argsort(scores, kind="stable")[: self.knobs.top_k]  # most negative: most helpful
        self.selected = (trainer.n_train + order).astype(np.int64)
        self.scores = scores[order]
        self.stats = {
            "influence_seconds": time.perf_counter() - tic, "influence_phase1_seconds": phase1,
            "influence_cache_hit": float(hit),
            "influence_top_k": float(self.knobs.top_k), "influence_pool": float(n_pool),
            "influence_params": float(n_params),
            "influence_selected_mean_score": float(self.scores.mean()),
            "influence_pool_mean_score": float(scores.mean()),
        }

    def _subset_names(self, model: "RegressionModel") -> list[str]:
        """The subset's parameter names in ``model``; checks that it applies and fits the solver."""
        names = SUBSETS.get(self.knobs.influence_params).names(model, self.knobs)
        wanted = set(names)
        size = sum(p.numel() for n, p in model.named_parameters() if n in wanted)
        if self.knobs.influence_solver == "exact" and size > EXACT_MAX_PARAMS:
            raise StudyError(
                f"influence_solver 'exact': influence_params {self.knobs.influence_params!r} has {size} parameters, "
                f"more than the {EXACT_MAX_PARAMS} an explicit Hessian allows; use 'lissa' or 'head_out'"
            )
        return names

    def _phase1(self, trainer: "PropertyTrainer") -> tuple[nn.Module, dict[str, list[list[int]]]]:
        """The phase-1 model and the token ids it reads; the trial's own model is left as it was."""
        uri = trainer.spec.options.get("base_model_uri")
        cand = trainer.candidates
        if uri:
            predictor = _load_base_model(uri)
            enc = predictor.tokenizer
            encode = lambda s: enc(list(s), truncation=True, max_length=enc.model_max_length)["input_ids"]  # noqa: E731
            inputs = {"train": encode(cand.smiles[: trainer.n_train]), "valid": encode(trainer.data.valid.smiles),
                      "pool": encode(cand.smiles[trainer.n_train :])}
            model = predictor.model.to(trainer.accelerator.device)
            if SUBSETS.get(self.knobs.influence_params).encoder:  # the loaded encoder, not the trial's
                _check_packed(model, inputs["valid"][:4], enc.pad_token_id, self.knobs.influence_params)
            return model, {**inputs, "pad": [[enc.pad_token_id]]}
        ids = trainer.ids["candidates"]
        inputs = {"train": ids[: trainer.n_train], "valid": trainer.ids["valid"], "pool": ids[trainer.n_train :],
                  "pad": [[trainer.tokenizer.pad_token_id]]}
        model = trainer.accelerator.unwrap_model(trainer.model)
        initial = copy.deepcopy(model.state_dict())
        params = [p for p in trainer.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=float(trainer.config["lr"]),
                                      weight_decay=float(trainer.config["weight_decay"]))
        from transformers import get_linear_schedule_with_warmup

        rows = np.arange(trainer.n_train)
        steps = self.knobs.influence_epochs * math.ceil(len(rows) / int(trainer.config["batch_size"]))
        scheduler = get_linear_schedule_with_warmup(optimizer, int(float(trainer.config["warmup_ratio"]) * steps), steps)
        for epoch in range(self.knobs.influence_epochs):
            trainer.train_epoch(trainer.train_loader(rows, 10_000 + epoch), optimizer, scheduler)
        phase1 = copy.deepcopy(model).eval()
        model.load_state_dict(initial)  # phase 3 starts from the same weights as a "none" trial
        return phase1, inputs

    def _scores(self, trainer: "PropertyTrainer", model: nn.Module,
                inputs: dict[str, Any]) -> tuple[np.ndarray, bool, int]:
        """Influence of every pool molecule (cached by content), whether the cache had it, subset size."""
        pad = inputs["pad"][0][0]
        names = self._subset_names(model)
        device = next(model.parameters()).device
        z = lambda y: torch.as_tensor(model.standardize(np.asarray(y)), dtype=torch.float32, device=device)  # noqa: E731
        cand = trainer.candidates
        targets = {"train": z(cand.targets[: trainer.n_train]), "valid": z(trainer.data.valid.targets),
                   "pool": z(cand.targets[trainer.n_train :])}
        order = np.arange(len(inputs["pool"]))
        if SUBSETS.get(self.knobs.influence_params).encoder:
            # SDPA has no forward-mode AD (LiSSA's Hessian-vector products): score with eager attention
            if hasattr(model.backbone, "set_attn_implementation"):
                model.backbone.set_attn_implementation("eager")
            flat = FlatModule(PackedRegression(model).eval(), [f"model.{n}" for n in names])
            order = np.argsort([len(x) for x in inputs["pool"]], kind="stable")  # chunks of similar length
            feats = {k: PackedRegression.pack(inputs[k], pad).to(device) for k in ("train", "valid")}
            feats["pool"] = PackedRegression.pack([inputs["pool"][i] for i in order], pad).to(device)
            targets["pool"] = targets["pool"][torch.as_tensor(order, device=device)]
            content = list(model.state_dict().values())  # the frozen weights shape the scores too
            # about one training batch of activations, and at most ~256 MB of per-sample gradients
            prepare, chunk = PackedRegression.trim, min(64, max(8, 2**26 // flat.theta.numel()))
            dots = per_sample_dots_vmap  # measured faster than forward mode through the encoder
        else:
            with torch.no_grad():
                feats = {k: embed_ids(model, inputs[k], pad, device).float().cpu() for k in ("train", "valid", "pool")}
            targets = {k: t.cpu() for k, t in targets.items()}
            flat = FlatModule(copy.deepcopy(model.head).float().cpu().eval(), [n.removeprefix("head.") for n in names])
            content, prepare, chunk = [flat.theta], _same, 512  # features already hold the frozen encoder
            dots = per_sample_dots  # ~30x faster than vmap(grad) on the head (bench_selection [1])
        lissa = self.knobs.lissa(trainer.seed)
        settings: dict[str, Any] = {"subset": self.knobs.influence_params, "solver": self.knobs.influence_solver,
                                    "layers": self.knobs.influence_layers, "damping": lissa.damping,
                                    "curvature": lissa.curvature}
        if self.knobs.influence_solver == "lissa":  # LiSSA-only knobs must not split the exact solver's cache
            settings.update(vars(lissa))
        key = _content_key([flat.theta, *content, *feats.values(), *targets.values()], settings)
        path = cache_dir() / "influence" / f"{key}.npy"
        if path.is_file():
            return np.load(path), True, flat.theta.numel()
        sorted_scores = influence_scores(
            flat, flat.theta, (feats["train"], targets["train"]), (feats["valid"], targets["valid"]),
            (feats["pool"], targets["pool"]), solver=self.knobs.influence_solver, lissa=lissa, chunk=chunk,
            prepare=prepare, dots=dots)
        scores = np.empty_like(sorted_scores)
        scores[order] = sorted_scores
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, scores)
        return scores, False, flat.theta.numel()

    def indices(self, epoch: int) -> np.ndarray:
        if self.knobs.influence_train_on == "topk":
            return self.selected
        return np.concatenate([np.arange(self.n_train), self.selected])

    def log(self) -> dict[str, float]:
        return dict(self.stats)

    def write_artifacts(self, path: Path, trainer: "PropertyTrainer") -> None:
        """``selection.csv``: the chosen pool molecules, their influence scores and ranks."""
        if len(self.selected):
            write_selection_csv(path / "selection.csv", trainer, self.selected,
                                {"influence": self.scores, "rank": np.arange(1, len(self.selected) + 1)})

    def state_dict(self) -> dict[str, Any]:
        return {"n_train": self.n_train, "selected": self.selected.tolist(), "scores": self.scores.tolist(),
                "stats": self.stats}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.n_train = int(state["n_train"])
        self.selected = np.asarray(state["selected"], dtype=np.int64)
        self.scores = np.asarray(state["scores"], dtype=np.float64)
        self.stats = dict(state["stats"])


SELECTORS.register("influence", InfluenceSelector,
                   help="influence functions (LiSSA): train + the top_k pool molecules that most lower valid loss")
