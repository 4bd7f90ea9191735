"""The inverse-Hessian-vector-product math of influence functions, on flat parameters.

Everything here takes ``predict(theta, x) -> [B]`` with a flat parameter vector ``theta``: the tests
check it on a linear model (closed-form influence) and through the encoder against per-sample autograd.
LiSSA (Agarwal et al. 2017) never forms the Hessian (forward-over-reverse products); the exact solver
forms it for small subsets; the pool's gradient dot products are batched (forward mode or ``vmap``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch.func import grad, jvp, vjp, vmap

from trainables.errors import StudyError
from trainables.selection.knobs import Curvature, LissaSettings

__all__ = [
    "Predict", "Prepare", "Dots", "Curvature", "CURVATURES", "EXACT_MAX_PARAMS", "LissaSettings", "mean_loss",
    "mean_grad", "per_sample_grads", "per_sample_grads_loop", "per_sample_dots", "per_sample_dots_vmap", "hvp",
    "gnvp", "lissa_ihvp", "exact_hessian", "exact_ihvp", "influence_scores", "pool_influence",
]

Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Prepare = Callable[[torch.Tensor], torch.Tensor]

EXACT_MAX_PARAMS = 5000  # an explicit P x P Hessian beyond this is the wrong tool

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


CURVATURES: dict[str, Callable[..., torch.Tensor]] = {"hessian": hvp, "gauss_newton": gnvp}


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
