"""The core receives a narrow trial spec; the study schema lives below the core and is re-exported."""

from __future__ import annotations

import pickle

import studies.spec as loader
import trainables.spec as schema
from studies.spec import parse_study
from tests.conftest import tiny_selection_study, tiny_study


def test_trial_spec_holds_what_trainers_read_and_nothing_of_the_search():
    spec = parse_study(tiny_study(metric="valid_r2", max_epochs=3, seed=7))
    trial = spec.trial_spec()
    assert isinstance(trial, schema.TrialSpec)
    assert (trial.max_epochs, trial.seed, trial.metric, trial.direction) == (3, 7, "valid_r2", "max")
    assert trial.model == spec.model and trial.dataset == spec.dataset and trial.resources == spec.resources
    assert trial.options == spec.options and trial.pool is None
    assert not {"fixed", "ranges", "enqueue", "search_space", "tracking", "scheduler"} & set(schema.TrialSpec.model_fields)
    assert pickle.loads(pickle.dumps(trial)) == trial  # travels to Ray workers


def test_schema_names_are_re_exported():
    for name in ("DatasetSpec", "ModelSpec", "ResourcesSpec", "SchedulerSpec", "TrackingSpec", "TableSpec", "TrialSpec"):
        assert getattr(loader, name) is getattr(schema, name)
    assert issubclass(loader.StudySpec, schema.StudySchema)
    assert not hasattr(schema, "StudySpec")  # one class of that name: the study file's (studies.spec)


def test_the_loader_records_which_knobs_the_space_searches():
    assert "selection" not in parse_study(tiny_study()).searched
    spec = parse_study(tiny_selection_study("curriculum", limit=200, max_epochs=3))
    assert {"selection", "lr", "method"} <= spec.searched and "lissa_batch" not in spec.searched
    assert pickle.loads(pickle.dumps(spec)).searched == spec.searched
