"""The ``selection`` space: conditional knobs per method, and the selection studies validate."""

from __future__ import annotations

from pathlib import Path

import pytest

from search_spaces import SPACES
from search_spaces.property import PROPERTY
from studies.spec import load_study
from trainables.errors import StudyError
from trainables.selection.base import SELECTORS

SPACE = SPACES.get("selection")
KNOBS = {
    "influence": {"top_k", "lissa_depth", "lissa_damping", "influence_train_on", "influence_params",
                  "influence_curvature"},
    "curriculum": {"curriculum_bins", "curriculum_difficulty", "curriculum_pacing"},
    "active": {"acquisition", "n_select", "rounds"},
    "none": set(),
}
ALL = set().union(*KNOBS.values()) | {"mc_passes", "influence_solver", "influence_layers"}
OPTIONAL = {"active": {"mc_passes"}, "influence": {"influence_solver", "influence_layers"}}
STUDIES = Path(__file__).resolve().parents[2] / "studies"


def test_extends_property_and_every_choice_is_a_registered_selector():
    assert SPACE.names[: len(PROPERTY.names)] == PROPERTY.names
    choices = next(p for p in SPACE.params if p.name == "selection").options()
    assert set(choices) == {"none", "influence", "curriculum", "active"} and set(choices) <= set(SELECTORS.names())
    top_k = next(p for p in SPACE.params if p.name == "top_k")
    assert top_k.log and top_k.kind == "int"


@pytest.mark.parametrize("method", ["none", "influence", "curriculum", "active"])
def test_knobs_appear_only_for_their_method(method):
    for seed in range(4):
        config = SPACE.sample(seed, fixed={"selection": method})
        present = set(config) & ALL
        assert KNOBS[method] <= present
        assert present - KNOBS[method] <= OPTIONAL.get(method, set())


def test_mc_passes_only_for_uncertainty_and_solver_only_for_head_out():
    config = SPACE.sample(0, fixed={"selection": "active", "acquisition": "random"})
    assert "mc_passes" not in config
    config = SPACE.sample(0, fixed={"selection": "active", "acquisition": "uncertainty"})
    assert 2 <= config["mc_passes"] <= 50
    assert "influence_solver" not in SPACE.sample(0, fixed={"selection": "influence", "influence_params": "head"})
    assert "influence_solver" in SPACE.sample(0, fixed={"selection": "influence", "influence_params": "head_out"})


def test_every_influence_subset_is_a_choice_and_layers_only_for_last_layers():
    from trainables.selection.influence import SUBSETS

    choices = next(p for p in SPACE.params if p.name == "influence_params").options()
    assert set(choices) == set(SUBSETS.names()) >= {"head", "head_out", "peft", "last_layers"}
    for subset in choices:
        config = SPACE.sample(1, fixed={"selection": "influence", "influence_params": subset})
        assert ("influence_layers" in config) == (subset == "last_layers")
        assert subset != "last_layers" or 1 <= config["influence_layers"] <= 4


def test_ranges_outside_the_space_are_rejected():
    with pytest.raises(StudyError, match="ranges.top_k"):
        SPACE.validate_overrides({}, {"top_k": [1, 100_000]})


@pytest.mark.parametrize("name,model,gpus", [
    ("lipophilicity_selection.yaml", "rxnfp-bert", 0),
    ("lipophilicity_selection_molformer.yaml", "hf", 1),
])
def test_selection_studies_validate(name, model, gpus):
    spec = load_study(STUDIES / name)
    assert spec.search_space == "selection" and spec.model.name == model
    assert spec.resources.gpus_per_trial == gpus
    assert spec.dataset.fractions["pool"] > 0
    assert max(spec.ranges["rounds"]) < spec.max_epochs
    if model == "hf":
        assert spec.model.path == "ibm/MoLFormer-XL-both-10pct" and spec.model.trust_remote_code
