"""Every declared knob is settable from a study; a typo is refused with the known names.

Knobs are declared once per plug-in (``trainables.knobs``); the spaces derive from them, so fixing a
knob here exercises the same declaration a trial reads its value back from.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from search_spaces import SPACES, Param, SearchSpace
from studies.spec import parse_study
from tests.conftest import ROOT, tiny_selection_study, tiny_study
from trainables.errors import StudyError
from trainables.property.task import DEFAULTS as PROPERTY_DEFAULTS, PropertyKnobs
from trainables.retro.task import DEFAULTS as RETRO_DEFAULTS, RetroKnobs

# The knobs docs/knobs.md documents beyond the search ranges: (space, a valid non-default value).
README_KNOBS: dict[str, tuple[str, Any]] = {
    "lissa_scale": ("selection", 12.5), "lissa_repeats": ("selection", 3), "lissa_batch": ("selection", 16),
    "influence_epochs": ("selection", 2), "mc_batch": ("selection", 8), "grad_accum": ("property", 4),
    "warmup_ratio": ("property", 0.2), "adapter_dim": ("retro", 32), "warmup": ("retro", 0.3),
    "weight_decay": ("retro", 0.05), "patience": ("property", 3), "influence_target_fraction": ("selection", 0.2),
}
ALL = [(space, p.name) for space in SPACES.names() for p in SPACES.get(space).declared]


def _param(space: SearchSpace, name: str) -> Param:
    return next(p for p in space.declared if p.name == name)


def _conditions(space: SearchSpace, p: Param) -> dict[str, Any]:
    """Fixed values that make ``p`` apply (its ``when``), themselves made to apply."""
    fixed: dict[str, Any] = {}
    for key, allowed in p.when.items():
        fixed.update(_conditions(space, _param(space, key)))
        fixed[key] = list(allowed)[0]
    return fixed


def _example(p: Param) -> Any:
    if p.searchable and p.kind == "categorical":
        return p.options()[-1]
    if p.searchable:
        return int(p.high) if p.kind == "int" else p.high
    return p.default if p.default is not None else {"lissa_scale": 2.0, "lora_alpha": 16.0,
                                                    "lora_targets": ["query", "value"]}[p.name]


def _fix_and_draw(space_name: str, name: str, value: Any) -> dict[str, Any]:
    space = SPACES.get(space_name)
    p = _param(space, name)
    fixed = {**_conditions(space, p), name: value}
    config = space.sample(seed=0, fixed=fixed)
    assert config[name] == value
    # The plug-in that declares the knob reads the same value back from the trial config.
    assert getattr(p.owner.from_config(config), name) == value
    return config


def test_readme_documents_these_knobs():
    readme = (ROOT / "docs" / "knobs.md").read_text()
    missing = [name for name in README_KNOBS if f"`{name}`" not in readme]
    assert not missing, missing


@pytest.mark.parametrize("name", sorted(README_KNOBS))
def test_each_documented_knob_can_be_fixed(name: str):
    space, value = README_KNOBS[name]
    config = _fix_and_draw(space, name, value)
    defaults = {"property": PROPERTY_DEFAULTS, "selection": PROPERTY_DEFAULTS, "retro": RETRO_DEFAULTS}[space]
    assert name not in defaults or {**defaults, **config}[name] == value != defaults[name]
    # ... and a study file fixing it validates.
    p = _param(SPACES.get(space), name)
    fixed = {**_conditions(SPACES.get(space), p), name: value}
    if space == "retro":
        study = {"name": "s", "task": "retro", "dataset": {"name": "uspto50k", "path": "/nowhere"},
                 "model": {"name": "tiny-bart"}, "search_space": "retro", "metric": "valid_top1",
                 "fixed": {"gamma": 0, **fixed}, "options": {"allow_random_init": True}}
    elif space == "selection":
        # 5 epochs: an active study samples up to 4 rounds, each followed by an epoch
        study = tiny_selection_study(fixed.pop("selection"), limit=200, max_epochs=5, **fixed)
    else:
        study = tiny_study(fixed=fixed)
    assert parse_study(study).fixed[name] == value


@pytest.mark.parametrize(("space", "name"), ALL, ids=[f"{s}-{n}" for s, n in ALL])
def test_every_declared_knob_can_be_fixed(space: str, name: str):
    p = _param(SPACES.get(space), name)
    _fix_and_draw(space, name, _example(p))


@pytest.mark.parametrize("space", SPACES.names())
def test_a_typo_is_refused_with_the_known_names(space: str):
    knobs = SPACES.get(space).knob_names
    typo = knobs[-1][:-1] + "x"
    with pytest.raises(StudyError, match=re.escape(f"fixed: unknown parameter(s) ['{typo}']; the space has ")) as err:
        SPACES.get(space).define_by_run(fixed={typo: 1})
    assert all(repr(k) in str(err.value) for k in knobs)


@pytest.mark.parametrize(("fixed", "message"), [
    ({"grad_accum": 0}, r"fixed.grad_accum: Input should be greater than or equal to 1"),
    ({"warmup_ratio": "lots"}, r"fixed.warmup_ratio: Input should be a valid number"),
    ({"lora_r": 2.5}, r"fixed.lora_r: Input should be a valid integer"),
    ({"lissa_scale": -1}, r"fixed.lissa_scale: Input should be greater than 0"),
    ({"mc_batch": 0}, r"fixed.mc_batch: Input should be greater than or equal to 1"),
])
def test_bad_fixed_values_name_the_key(fixed: dict, message: str):
    with pytest.raises(StudyError, match=message):
        SPACES.get("selection").validate_overrides(fixed, {})


def test_a_knob_that_is_not_searched_takes_no_range():
    with pytest.raises(StudyError, match=r"ranges.lissa_batch: not searched in this space; fix it instead"):
        SPACES.get("selection").validate_overrides({}, {"lissa_batch": [8, 64]})


def test_fixed_values_come_back_as_the_declared_type():
    fn = SPACES.get("property").define_by_run(fixed={"lr": "1e-4", "grad_accum": 2.0})  # YAML reads 1e-4 as text
    assert fn.fixed == {"lr": 1e-4, "grad_accum": 2} and isinstance(fn.fixed["grad_accum"], int)


def test_defaults_are_the_declared_ones():
    assert PROPERTY_DEFAULTS == PropertyKnobs().model_dump() and PROPERTY_DEFAULTS["grad_accum"] == 1
    assert RETRO_DEFAULTS == RetroKnobs().model_dump() and RETRO_DEFAULTS["warmup"] == 0.1


def test_spaces_sample_what_the_knobs_declare():
    """A searched knob's range lies within what its field accepts, and its default lies in the field too."""
    for space in SPACES.names():
        for p in SPACES.get(space).params:
            values = p.options() if p.kind == "categorical" else [p.low, p.high]
            for v in values:
                p.coerce(int(v) if p.kind == "int" else v)
