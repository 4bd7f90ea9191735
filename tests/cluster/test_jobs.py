"""The job's runtime environment: tracking settings travel, secrets do not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cluster.jobs import entrypoint, runtime_env
from trainables.errors import StudyError


def test_runtime_env_forwards_tracking_settings_not_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("CHEMTUNE_")]:  # CI sets CHEMTUNE_DATA_DIR
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("CHEMTUNE_HOME", "/shared/runs")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2")
    monkeypatch.setenv("CHEMTUNE_API_TOKEN", "t0ken")
    env = runtime_env(tmp_path)
    assert env["working_dir"] == str(tmp_path)
    assert env["env_vars"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "CHEMTUNE_HOME" not in env["env_vars"]  # on the command line: chemtune launch re-forwards it
    assert entrypoint("s.yaml") == "CHEMTUNE_HOME=/shared/runs python -m studies.cli launch s.yaml --address auto"
    assert "t0ken" not in entrypoint("s.yaml")
    assert "hunter2" not in str(env) and "t0ken" not in str(env)
    assert {Path(p).name for p in env["py_modules"]} == {"studies", "trainables", "search_spaces", "cluster"}
    assert "py_modules" not in runtime_env(tmp_path, ship_code=False)


def test_runtime_env_refuses_explicit_secrets(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="MLFLOW_TRACKING_PASSWORD"):
        runtime_env(tmp_path, env={"MLFLOW_TRACKING_PASSWORD": "x"})
