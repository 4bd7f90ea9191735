"""Curriculum learning (Bengio et al. 2009): easy molecules first, harder ones join as epochs pass.

Difficulty is a registered function of the SMILES (length by default; heavy atoms, ring count).
The range ``[d_min, d_max]`` of the train split is cut into ``curriculum_bins`` equal bins; a
molecule counts as its bin's *upper* edge (the hardest molecule the bin may hold). At epoch ``e`` of
``E`` (1-based) the threshold is ``d_min + (d_max - d_min) * pace(e / E)`` (``pace`` registered;
``linear`` is the identity, the paper's schedule) and the epoch trains on the molecules whose bin lies
wholly at or below it, so the last epoch trains on all of them. (Comparing the lower edge instead admits
the bin the threshold cuts through: one bin too many.) When the first threshold falls inside the first
bin (more epochs than bins) the easiest bin is admitted, so no epoch is empty.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import numpy as np
from pydantic import Field, field_validator

from trainables.errors import StudyError
from trainables.knobs import Search
from trainables.registry import Registry
from trainables.selection.base import SELECTORS, selection_names
from trainables.selection.common import Knobs, first_rung, study_bounds, study_choices, write_selection_csv

if TYPE_CHECKING:
    from trainables.base import Reporter
    from trainables.selection.base import SelectionContext
    from trainables.spec import StudySchema

__all__ = [
    "DIFFICULTIES", "PACINGS", "CurriculumKnobs", "CurriculumSelector", "binned_difficulty", "eligible", "full_data_epoch",
]

DIFFICULTIES: Registry[Callable[[str], float]] = Registry("difficulty")
PACINGS: Registry[Callable[[float], float]] = Registry("pacing")


def _heavy_atoms(smiles: str) -> float:
    from rdkit import Chem

    return float(Chem.MolFromSmiles(smiles).GetNumHeavyAtoms())


def _rings(smiles: str) -> float:
    from rdkit import Chem
    from rdkit.Chem import rdMolDescriptors

    return float(rdMolDescriptors.CalcNumRings(Chem.MolFromSmiles(smiles)))


DIFFICULTIES.register("smiles_length", lambda s: float(len(s)), help="characters of the canonical SMILES")
DIFFICULTIES.register("heavy_atoms", _heavy_atoms, help="heavy-atom count (RDKit)")
DIFFICULTIES.register("rings", _rings, help="ring count (RDKit SSSR)")

PACINGS.register("linear", lambda f: f, help="threshold grows linearly: d_min + (d_max - d_min) e/E")
PACINGS.register("root", math.sqrt, help="fast start: sqrt(e/E)")
PACINGS.register("quadratic", lambda f: f * f, help="slow start: (e/E)^2")


def binned_difficulty(difficulty: np.ndarray, bins: int, edge: str = "upper") -> np.ndarray:
    """Each value replaced by the ``upper`` (default) or ``lower`` edge of its bin (equal-width bins)."""
    edges = np.linspace(difficulty.min(), difficulty.max(), bins + 1)
    which = np.clip(np.searchsorted(edges, difficulty, side="right") - 1, 0, bins - 1)
    return edges[which + 1] if edge == "upper" else edges[which]


def eligible(difficulty: np.ndarray, bins: int, epoch: int, epochs: int,
             pace: Callable[[float], float]) -> tuple[np.ndarray, float]:
    """Indices whose bin's upper edge is at or below the threshold at 0-based ``epoch`` of ``epochs``.

    Returns:
        The indices and the threshold ``d_min + (d_max - d_min) * pace((epoch + 1) / epochs)``.
    """
    d_min, d_max = float(difficulty.min()), float(difficulty.max())
    threshold = d_min + (d_max - d_min) * pace((epoch + 1) / epochs)
    upper = binned_difficulty(difficulty, bins, "upper")
    rows = np.flatnonzero(upper <= threshold + 1e-9 * max(1.0, abs(threshold)))
    if len(rows) == 0:  # the threshold is inside the first bin: start with the easiest bin
        rows = np.flatnonzero(upper <= upper.min())
    return rows, threshold


def full_data_epoch(pace: Callable[[float], float], epochs: int) -> int:
    """The first 1-based epoch whose threshold reaches d_max, i.e. that trains on every molecule
    (the last bin's upper edge is d_max): ``epochs`` for every registered pacing."""
    return next(e for e in range(1, epochs + 1) if e == epochs or pace(e / epochs) >= 1 - 1e-9)


class CurriculumKnobs(Knobs):
    """Knobs of ``selection: curriculum``."""

    needs_pool: ClassVar[bool] = False

    curriculum_bins: Annotated[int, Search(2, 20)] = Field(10, ge=1, description="difficulty bins")
    curriculum_difficulty: Annotated[str, Search(choices=DIFFICULTIES.names)] = Field(
        "smiles_length", description="difficulty measure: " + ", ".join(DIFFICULTIES.names()))
    curriculum_pacing: Annotated[str, Search(choices=PACINGS.names)] = Field(
        "linear", description="how fast the threshold rises: " + ", ".join(PACINGS.names()))

    @field_validator("curriculum_difficulty")
    @classmethod
    def _difficulty(cls, v: str) -> str:
        DIFFICULTIES.get(v)
        return v

    @field_validator("curriculum_pacing")
    @classmethod
    def _pacing(cls, v: str) -> str:
        PACINGS.get(v)
        return v

    @classmethod
    def check_study(cls, spec: "StudySchema", n_pool: int | None, name: str) -> None:
        """ASHA's first rung must not fall before the curriculum trains on all of train when trials at that rung
        can differ in how much of train they have seen (another selection method, or another schedule).

        Before that epoch a curriculum trial's valid metric is that of a model which has not met the hardest
        molecules; ranked against a trial that has (or a faster schedule), it is cut for its pacing, not its
        quality. Trials that all run one schedule are alike at every rung, so early stopping stays allowed.
        """
        super().check_study(spec, n_pool, name)
        pacings = study_choices(spec, cls, "curriculum_pacing")
        full = max(full_data_epoch(PACINGS.get(p), spec.max_epochs) for p in pacings)
        others = [n for n in selection_names(spec) if n != name]
        schedules = (len(pacings) > 1 or len(study_choices(spec, cls, "curriculum_difficulty")) > 1
                     or len(set(study_bounds(spec, cls, "curriculum_bins"))) > 1)
        if first_rung(spec) >= full or not (others or schedules):
            return
        against = f"trials of selection {', '.join(others)}" if others else "trials on another curriculum schedule"
        raise StudyError(
            f"{spec.name}: scheduler.grace_period {spec.scheduler.grace_period} lets ASHA stop trials after epoch "
            f"{first_rung(spec)}, but selection {name!r} trains on all of train only from epoch {full} of max_epochs "
            f"{spec.max_epochs} (curriculum_pacing {', '.join(map(str, pacings))}); before that it would be ranked "
            f"against {against} on a model that has not seen the hardest molecules: set scheduler.grace_period to "
            f"{full}, or fix selection: curriculum with one curriculum_bins, curriculum_pacing and curriculum_difficulty"
        )


class CurriculumSelector:
    """Train rows whose binned difficulty is at or below the epoch's threshold."""

    knobs = CurriculumKnobs
    check_study = CurriculumKnobs.check_study

    def __init__(self, config: dict[str, Any]) -> None:
        self.knobs = CurriculumKnobs.from_config(config, where="selection 'curriculum'")
        self.difficulty = np.zeros(0)
        self.epochs = 1
        self.last: dict[str, float] = {}
        self._rows = np.zeros(0, dtype=np.int64)

    def setup(self, ctx: "SelectionContext", reporter: "Reporter", state: dict[str, Any] | None = None) -> None:
        if state is not None:
            self.load_state_dict(state)
            return
        score = DIFFICULTIES.get(self.knobs.curriculum_difficulty)
        self.difficulty = np.asarray([score(s) for s in ctx.candidates.smiles[: ctx.n_train]], dtype=np.float64)
        self.epochs = ctx.max_epochs

    def epoch_sizes(self, epochs: int) -> list[int]:
        pace = PACINGS.get(self.knobs.curriculum_pacing)
        return [len(eligible(self.difficulty, self.knobs.curriculum_bins, e, self.epochs, pace)[0]) for e in range(epochs)]

    def indices(self, epoch: int) -> np.ndarray:
        rows, threshold = eligible(self.difficulty, self.knobs.curriculum_bins, epoch, self.epochs,
                                   PACINGS.get(self.knobs.curriculum_pacing))
        self._rows = rows
        self.last = {"curriculum_threshold": threshold, "curriculum_n_eligible": float(len(rows)),
                     "curriculum_share": len(rows) / max(len(self.difficulty), 1)}
        return rows

    def log(self) -> dict[str, float]:
        return dict(self.last)

    def write_artifacts(self, path: Path, ctx: "SelectionContext") -> None:
        """``selection.csv``: this epoch's eligible molecules with their difficulty."""
        if len(self._rows):
            write_selection_csv(path / "selection.csv", ctx, self._rows, {"difficulty": self.difficulty[self._rows]})

    def state_dict(self) -> dict[str, Any]:
        return {"difficulty": self.difficulty.tolist(), "epochs": self.epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.difficulty = np.asarray(state["difficulty"], dtype=np.float64)
        self.epochs = int(state["epochs"])


SELECTORS.register("curriculum", CurriculumSelector,
                   help="curriculum: train molecules whose difficulty bin lies below a threshold that rises each epoch")
