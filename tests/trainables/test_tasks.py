"""Shared suite: every registered task prepares tiny data and trains one trial without Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from search_spaces import SPACES
from studies.spec import parse_study
from tests.conftest import TINY_STUDIES
from trainables import TASKS, NullReporter


@pytest.mark.parametrize("task", TASKS.names())
def test_task_trains_one_trial_and_reports_its_metrics(task: str, tmp_path: Path) -> None:
    assert task in TINY_STUDIES, f"add a tiny study for the {task!r} task to tests/conftest.py"
    spec = parse_study(TINY_STUDIES[task])
    definition = TASKS.get(task)
    prepared = definition.prepare(spec)
    assert prepared.reports and all(r.n_kept > 0 for r in prepared.reports)
    config = SPACES.get(spec.search_space).sample(seed=0, fixed=spec.fixed)
    reporter = NullReporter(keep_dir=tmp_path / "ckpt")
    final = definition.train(config, prepared.payload, spec, reporter)
    assert len(reporter.history) == spec.max_epochs
    for metric in definition.metrics:
        assert f"valid_{metric}" in reporter.history[0]
        assert f"test_{metric}" in final or any(k.startswith("test_") for k in final)
    assert (tmp_path / "ckpt" / "state.pt").is_file() and (tmp_path / "ckpt" / "model").is_dir()
