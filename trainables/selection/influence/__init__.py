"""Influence-function selection (Koh & Liang 2017) with a LiSSA inverse-Hessian-vector product.

Phase 1 gives a fine-tuned model (trained inside the trial on the train split, or a registered
MLflow model: task option ``base_model_uri``). Phase 2 scores every pool molecule z by its
influence on the loss of a *target* held out of train (``influence_target_fraction``, carved by the
study's splitter; never valid, which ranks the trials), ``I(z) = -grad L_target^T (H + damping I)^-1
grad L(z)``, over a parameter subset that keeps it tractable (:data:`SUBSETS`): the regression head or its output
layer (scored on frozen pooled embeddings, cheap), or, through the encoder, the parameters the
fine-tuning method trains (PEFT adapters, BitFit biases) or the last N encoder layers, each with
the head. The pool's per-sample gradient dot products are batched, never a loop over molecules:
``torch.func.vmap(grad(...))`` through the encoder, one forward-mode ``jvp`` of the per-sample
losses on the head (measured faster for each). The Hessian is never formed for LiSSA
(Hessian-vector products by forward-over-reverse ``jvp``), and formed explicitly only by the exact
solver, for small subsets. ``H`` is by default the Gauss-Newton matrix (``influence_curvature``):
a fine-tuned network is not convex, and with the true Hessian the damping must exceed its most
negative eigenvalue (about -0.2 for the head after one epoch on Lipophilicity), or LiSSA diverges;
a diverged estimate is refused, never ranked. Phase 3 trains on train (less the target) + the
``top_k`` most helpful (most negative ``I(z)``) pool molecules, or on those alone.

Scores are cached on disk by content (model weights, inputs, labels, subset, solver settings), so
trials that differ only in ``top_k`` do not recompute them.

The core functions take any ``predict(theta, x) -> [B]`` with flat parameters ``theta``; the tests
check them on a linear model, where the exact influence has a closed form, and through the encoder
against per-sample autograd on the ordinary forward.
"""

from trainables.selection.influence.ihvp import (
    CURVATURES,
    EXACT_MAX_PARAMS,
    LissaSettings,
    exact_hessian,
    exact_ihvp,
    gnvp,
    hvp,
    influence_scores,
    lissa_ihvp,
    mean_grad,
    mean_loss,
    per_sample_dots,
    per_sample_dots_vmap,
    per_sample_grads,
    per_sample_grads_loop,
    pool_influence,
)
from trainables.selection.influence.selector import InfluenceKnobs, InfluenceSelector, influence_target
from trainables.selection.influence.subsets import (
    SUBSETS,
    FlatModule,
    PackedRegression,
    Subset,
    check_packed,
    encoder_layers,
)

_check_packed = check_packed  # the name the tests knew

__all__ = [
    "InfluenceKnobs", "InfluenceSelector", "influence_target", "LissaSettings", "SUBSETS", "Subset", "FlatModule", "PackedRegression",
    "CURVATURES", "EXACT_MAX_PARAMS", "encoder_layers", "check_packed", "mean_grad", "mean_loss", "per_sample_grads",
    "per_sample_grads_loop", "per_sample_dots", "per_sample_dots_vmap", "hvp", "gnvp", "lissa_ihvp", "exact_hessian",
    "exact_ihvp", "influence_scores", "pool_influence",
]
