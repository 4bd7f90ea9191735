"""Shared suite: every registered search space samples valid, conditional, overridable configs."""

from __future__ import annotations

import pickle

import optuna
import pytest

from search_spaces import SPACES, Param, SearchSpace
from trainables.errors import StudyError

SPACE_NAMES = SPACES.names()


def _draws(space: SearchSpace, n: int = 30, **kw) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    fn = space.define_by_run(**kw)
    out = []
    for _ in range(n):
        trial = study.ask()
        constants = fn(trial)
        out.append({**trial.params, **constants})
        study.tell(trial, 0.0)
    return out


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_draws_stay_in_range_and_respect_conditions(name: str) -> None:
    space = SPACES.get(name)
    for config in _draws(space):
        for p in space.params:
            active = all(config.get(k) in v for k, v in p.when.items())
            assert (p.name in config) == active, (p.name, config)
            if not active:
                continue
            value = config[p.name]
            if p.kind == "categorical":
                assert value in p.options()
            else:
                assert p.low <= value <= p.high


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_fixing_and_narrowing(name: str) -> None:
    space = SPACES.get(name)
    first = space.params[0]
    fixed_value = first.options()[0] if first.kind == "categorical" else first.low
    # a float that is active once the first parameter is fixed (every parameter of a mixed space is conditional)
    numeric = next(p for p in space.params if p.kind == "float"
                   and all(k == first.name and fixed_value in v for k, v in p.when.items()))
    narrow = [numeric.low + (numeric.high - numeric.low) * 0.4, numeric.low + (numeric.high - numeric.low) * 0.6]
    for config in _draws(space, 15, fixed={first.name: fixed_value}, ranges={numeric.name: narrow}):
        assert config[first.name] == fixed_value
        assert narrow[0] <= config[numeric.name] <= narrow[1]


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_unknown_and_out_of_range_overrides_fail(name: str) -> None:
    space = SPACES.get(name)
    with pytest.raises(StudyError, match=r"fixed: unknown parameter\(s\) \['no_such_knob'\]"):
        space.define_by_run(fixed={"no_such_knob": 1})
    numeric = next(p for p in space.params if p.kind == "float")
    with pytest.raises(StudyError, match=f"ranges.{numeric.name}: .* is outside"):
        space.define_by_run(ranges={numeric.name: [numeric.low - 1, numeric.high]})
    cat = next(p for p in space.params if p.kind == "categorical")
    with pytest.raises(StudyError, match=f"fixed.{cat.name}: 'bogus' is not one of"):
        space.define_by_run(fixed={cat.name: "bogus"})


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_define_by_run_pickles(name: str) -> None:
    fn = SPACES.get(name).define_by_run()
    assert pickle.loads(pickle.dumps(fn)) == fn  # Tune saves the searcher with it


def test_property_space_lora_params_only_for_lora() -> None:
    configs = _draws(SPACES.get("property"), 40)
    assert any(c["method"] == "lora" for c in configs) and any(c["method"] != "lora" for c in configs)
    for c in configs:
        assert ("lora_r" in c) == (c["method"] == "lora")
        if "lora_r" in c:
            assert 2 <= c["lora_r"] <= 64 and isinstance(c["lora_r"], int)


def test_conditions_must_name_earlier_parameters() -> None:
    with pytest.raises(ValueError, match="depends on"):
        SearchSpace((Param("r", "int", 1, 4, when={"method": ["lora"]}), Param("method", "categorical", choices=["lora"])))
