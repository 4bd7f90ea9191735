"""The knobs of the selection methods that need torch (``active``, ``influence``), declared apart from them.

The ``selection`` search space and ``chemtune list spaces`` read these models without importing
torch (``SELECTORS`` declares each method with its knobs here, ``trainables.registry``); the
selectors themselves validate their config with the same models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from trainables.errors import StudyError
from trainables.knobs import Search
from trainables.registry import Registry
from trainables.selection.common import Knobs, first_rung, study_bounds, study_values

if TYPE_CHECKING:
    import numpy as np

    from trainables.spec import StudySchema

__all__ = [
    "ActiveKnobs", "InfluenceKnobs", "SUBSETS", "Subset", "Curvature", "LissaSettings", "acquisition_epochs",
    "influence_target",
]

Curvature = Literal["hessian", "gauss_newton"]


@dataclass(frozen=True)
class Subset:
    """Which parameters of a :class:`RegressionModel` influence is taken over.

    Attributes:
        names: ``(model, knobs) -> parameter names`` (raises :class:`StudyError` when it does not apply).
        encoder: Whether some lie in the encoder: then per-sample gradients run through it on token ids;
            otherwise on the frozen pooled embeddings (much cheaper).
    """

    names: Callable[[Any, "InfluenceKnobs"], list[str]]  # (RegressionModel, knobs)
    encoder: bool


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


def influence_target(train_smiles: list[str], fraction: float, split: str, seed: int) -> "np.ndarray":
    """Rows of the train split held out as the influence target, carved as the study carved valid.

    Under a scaffold split valid shares no scaffold with train; a target drawn at random from train
    would share scaffolds with the rows phase 1 trains on and so favour pool molecules like train, not
    like valid. The registered splitter (``dataset.split``) with ``{"valid": fraction}`` keeps the two alike.
    """
    import numpy as np  # not at import: `chemtune list` reads this module

    from trainables.data.splits import SPLITTERS  # RDKit

    target = SPLITTERS.get(split)(list(train_smiles), {"valid": fraction}, seed)["valid"]
    if len(target) == 0 or len(target) == len(train_smiles):
        raise StudyError(
            f"selection 'influence': influence_target_fraction {fraction} of the {len(train_smiles)} train molecules "
            f"({split} split) leaves {len(target)} target rows; the target and the rows trained on must both be "
            "non-empty: change influence_target_fraction or use more data")
    return np.asarray(target, dtype=np.int64)


# Parameter subsets influence is taken over; trainables.selection.influence.subsets registers them.
SUBSETS: Registry[Subset] = Registry("influence parameter subset")
SUBSETS.register_lazy("head", "trainables.selection.influence.subsets", help="the whole regression head (MLP)")
SUBSETS.register_lazy("head_out", "trainables.selection.influence.subsets",
                      help="the head's output layer only (small enough for the exact solver)")
SUBSETS.register_lazy("peft", "trainables.selection.influence.subsets",
                      help="what the method trains in the encoder (LoRA / IA3 adapters, BitFit biases; all for "
                           "'full') + the head")
SUBSETS.register_lazy("last_layers", "trainables.selection.influence.subsets",
                      help="the last influence_layers encoder layers + the head")


def acquisition_epochs(rounds: int, epochs: int) -> list[int]:
    """0-based epochs that start with an acquisition: ``floor(r E / (R + 1))`` for r = 1..R (distinct, in 1..E-1)."""
    return [r * epochs // (rounds + 1) for r in range(1, rounds + 1)]


class ActiveKnobs(Knobs):
    """Knobs of ``selection: active``."""

    pool_knobs: ClassVar[tuple[str, ...]] = ("n_select", "rounds")

    acquisition: Annotated[Literal["uncertainty", "random"], Search(choices=("uncertainty", "random"))] = Field(
        "uncertainty", description="MC-dropout uncertainty, or the random baseline with the same budget")
    mc_passes: Annotated[int, Search(5, 50, when={"acquisition": ["uncertainty"]})] = Field(
        20, ge=2, description="MC-dropout passes T")
    n_select: Annotated[int, Search(16, 512, log=True)] = Field(50, ge=1, description="pool molecules added per round")
    rounds: Annotated[int, Search(1, 4)] = Field(2, ge=1, description="acquisition rounds (below max_epochs)")
    mc_batch: int = Field(64, ge=1, description="molecules per MC-dropout forward (times mc_passes rows)")

    def pool_demand(self) -> int:
        return self.n_select * self.rounds

    @classmethod
    def check_study(cls, spec: "StudySchema", n_pool: int | None, name: str) -> None:
        """Besides the pool: every round leaves an epoch after it, and ASHA's first rung comes after the
        first epoch that trains on acquired molecules (else trials are cut before the selection acts)."""
        super().check_study(spec, n_pool, name)
        fewest, most = (int(v) for v in study_bounds(spec, cls, "rounds"))
        if most >= spec.max_epochs:
            raise StudyError(
                f"{spec.name}: selection {name!r} needs an epoch after each acquisition round: rounds {most} "
                f"must be below max_epochs {spec.max_epochs}"
            )
        # The fewest rounds acquire first the latest: at 0-based epoch E // (R + 1), trained as epoch + 1.
        first = acquisition_epochs(fewest, spec.max_epochs)[0] + 1
        if first_rung(spec) < first:
            raise StudyError(
                f"{spec.name}: scheduler.grace_period {spec.scheduler.grace_period} lets ASHA stop trials after "
                f"epoch {first_rung(spec)}, before selection {name!r} has trained on its first acquisition (with "
                f"rounds {fewest} and max_epochs {spec.max_epochs} the first epoch with acquired molecules is "
                f"epoch {first}): set scheduler.grace_period to at least {first}, or raise rounds"
            )


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
    influence_target_fraction: float = Field(
        0.1, gt=0, le=0.5,
        description="share of the train split held out as the influence target (carved like valid: by scaffold "
                    "under a scaffold split); influence minimises the loss on these rows, and neither phase 1 nor "
                    "phase 3 trains on them, so the study's ranking on valid is not on the split influence optimised")

    @classmethod
    def data_summary(cls, spec: "StudySchema", train_smiles: list[str]) -> dict[str, int]:
        """Study parameters: how many train rows the influence target holds out (``n_influence_target``)."""
        fraction = study_values(spec, ["influence_target_fraction"]).get(
            "influence_target_fraction", cls.model_fields["influence_target_fraction"].default)
        return {"n_influence_target": len(influence_target(train_smiles, float(fraction), spec.dataset.split, spec.seed))}

    def pool_demand(self) -> int:
        return self.top_k

    @model_validator(mode="after")
    def _consistent(self) -> "InfluenceKnobs":
        SUBSETS.check(self.influence_params)
        if self.influence_solver == "exact" and self.influence_params == "head":
            raise ValueError("influence_solver 'exact' forms the Hessian explicitly, too big for the whole head; "
                             "use influence_params 'head_out' (or a small 'peft' subset)")
        return self

    def lissa(self, seed: int) -> LissaSettings:
        return LissaSettings(self.lissa_depth, self.lissa_scale, self.lissa_damping, self.lissa_repeats,
                             self.lissa_batch, seed, self.influence_curvature)
