from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from studies.spec import load_study, parse_study
from tests.conftest import ROOT, tiny_study
from trainables.errors import StudyError

EXAMPLES = sorted((ROOT / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_studies_validate(path: Path, paper_data_dir: Path) -> None:  # teacher CSV, checkpoint
    spec = load_study(path)
    assert spec.name and spec.num_trials >= 1


def test_defaults_and_direction() -> None:
    spec = parse_study(tiny_study())
    assert spec.direction == "min" and spec.scheduler.grace_period == 1 and spec.resources.gpus_per_trial == 0
    assert parse_study(tiny_study(metric="valid_r2")).direction == "max"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"fixed": {"method": "dora"}}, r"fixed.method: 'dora' is not one of \['full', 'bitfit', 'lora', 'ia3'"),
        ({"fixed": {"learning_rate": 0.1}}, r"fixed: unknown parameter\(s\) \['learning_rate'\]"),
        ({"ranges": {"lr": [1.0, 2.0]}}, r"ranges.lr: \[1, 2\] is outside"),
        ({"dataset": {"name": "tox21"}}, r"dataset.name: unknown dataset 'tox21'; choose one of: lipophilicity"),
        ({"model": {"name": "gpt"}}, r"model.name: unknown model 'gpt'"),
        ({"task": "docking"}, r"task: unknown task 'docking'"),
        ({"metric": "valid_auc"}, r"metric 'valid_auc' is not one the property task reports"),
        ({"metric": "test_rmse"}, r"metric 'test_rmse' is not one"),
        ({"num_trials": 0}, r"num_trials: Input should be greater than or equal to 1"),
        ({"resources": {"gpus_per_trial": 1.5}}, r"gpus_per_trial above 1 must be a whole number"),
        ({"dataset": {"fractions": {"valid": 0.6, "test": 0.5}}}, r"dataset.fractions: fractions must be"),
        ({"colour": "blue"}, r"colour: unknown key"),
        ({"enqueue": [{"method": "lora"}, {"method": "qlora"}]}, r"enqueue\[1\]: fixed.method: 'qlora' is not one"),
        # an enqueued point is the sampler's first draw: a knob the sampler never draws would be dropped silently
        ({"enqueue": [{"method": "lora", "patience": 3}]},
         r"enqueue\[0\].patience: the sampler never draws it \(a fixed-only knob\), so the enqueued value would be "
         r"ignored; set it for the study in fixed.patience"),
        ({"fixed": {"lr": 1e-4}, "enqueue": [{"lr": 1e-3}]},
         r"enqueue\[0\].lr: the sampler never draws it \(fixed.lr sets it for every trial\)"),
        ({"name": "has space"}, r"name: String should match pattern"),
    ],
)
def test_bad_studies_name_the_key_and_the_problem(overrides: dict, message: str) -> None:
    with pytest.raises(StudyError, match=message):
        parse_study(tiny_study(**overrides), "bad.yaml")


def test_malformed_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\ntask: [property\n")
    with pytest.raises(StudyError, match=r"broken.yaml: malformed YAML"):
        load_study(bad)
    with pytest.raises(StudyError, match="study file not found"):
        load_study(tmp_path / "nope.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(StudyError, match="must be a mapping"):
        load_study(listy)
