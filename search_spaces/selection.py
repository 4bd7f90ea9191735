"""The ``selection`` space: the ``property`` knobs plus which data-selection method and its knobs."""

from __future__ import annotations

from search_spaces.base import SPACES, Param
from search_spaces.property import PROPERTY
from trainables.selection.curriculum import DIFFICULTIES, PACINGS
from trainables.selection.influence import SUBSETS

__all__ = ["SELECTION"]

SELECTION = PROPERTY.extend(
    Param("selection", "categorical", choices=("none", "influence", "curriculum", "active"),
          help="data-selection method (none: the train split as is)"),
    Param("top_k", "int", 16, 2048, log=True, when={"selection": ["influence"]},
          help="pool molecules added by influence (the most helpful)"),
    Param("influence_train_on", "categorical", choices=("train+topk", "topk"), when={"selection": ["influence"]},
          help="phase 3 trains on train + top-k, or on the top-k alone"),
    Param("influence_params", "categorical", choices=SUBSETS.names, when={"selection": ["influence"]},
          help="parameter subset the influence is taken over"),
    Param("influence_layers", "int", 1, 4, when={"selection": ["influence"], "influence_params": ["last_layers"]},
          help="encoder layers, from the top, in the 'last_layers' subset"),
    Param("influence_solver", "categorical", choices=("lissa", "exact"),
          when={"selection": ["influence"], "influence_params": ["head_out"]},
          help="inverse-HVP by LiSSA, or the explicit Hessian (small subsets)"),
    Param("influence_curvature", "categorical", choices=("gauss_newton", "hessian"), when={"selection": ["influence"]},
          help="Gauss-Newton matrix (positive semi-definite), or the Hessian (needs damping above its lowest eigenvalue)"),
    Param("lissa_depth", "int", 50, 500, log=True, when={"selection": ["influence"]}, help="LiSSA recursion depth"),
    Param("lissa_damping", "float", 1e-3, 1.0, log=True, when={"selection": ["influence"]},
          help="damping added to the Hessian before inversion"),
    Param("curriculum_bins", "int", 2, 20, when={"selection": ["curriculum"]}, help="difficulty bins"),
    Param("curriculum_difficulty", "categorical", choices=DIFFICULTIES.names, when={"selection": ["curriculum"]},
          help="difficulty measure"),
    Param("curriculum_pacing", "categorical", choices=PACINGS.names, when={"selection": ["curriculum"]},
          help="how fast the threshold rises"),
    Param("acquisition", "categorical", choices=("uncertainty", "random"), when={"selection": ["active"]},
          help="MC-dropout uncertainty, or the random baseline with the same budget"),
    Param("mc_passes", "int", 5, 50, when={"selection": ["active"], "acquisition": ["uncertainty"]},
          help="MC-dropout passes T"),
    Param("n_select", "int", 16, 512, log=True, when={"selection": ["active"]}, help="pool molecules added per round"),
    Param("rounds", "int", 1, 4, when={"selection": ["active"]}, help="acquisition rounds (below max_epochs)"),
    help="property + data selection: influence (top_k, LiSSA), curriculum (bins), active learning (MC dropout)",
)
SPACES.register("selection", SELECTION, help=SELECTION.help)
