"""The job's runtime environment: tracking settings travel, secrets do not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cluster.jobs import FORWARDED_ENV, entrypoint, runtime_env
from trainables.errors import StudyError


def test_runtime_env_forwards_tracking_settings_not_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if FORWARDED_ENV.match(k)]:  # CI sets CHEMTUNE_DATA_DIR
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("CHEMTUNE_HOME", "/shared/runs")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2")
    monkeypatch.setenv("CHEMTUNE_API_TOKEN", "t0ken")
    env = runtime_env(tmp_path)
    assert env["working_dir"] == str(tmp_path)
    monkeypatch.setenv("HF_HOME", "/shared/hf")
    env = runtime_env(tmp_path)
    assert env["env_vars"] == {"HF_HOME": "/shared/hf"}
    # On the command line, once: chemtune launch hands them on to its trials (see test_trial_env_*).
    assert entrypoint("s.yaml") == ("CHEMTUNE_HOME=/shared/runs MLFLOW_TRACKING_URI=http://mlflow:5000 "
                                    "python -m studies.cli launch s.yaml --address auto")
    assert entrypoint("s.yaml", tracking_uri="http://other:5000").endswith("--tracking-uri http://other:5000")
    assert "t0ken" not in entrypoint("s.yaml")
    assert "hunter2" not in str(env) and "t0ken" not in str(env)
    assert {Path(p).name for p in env["py_modules"]} == {"studies", "trainables", "search_spaces", "cluster"}
    assert "py_modules" not in runtime_env(tmp_path, ship_code=False)


def test_runtime_env_refuses_explicit_secrets(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="MLFLOW_TRACKING_PASSWORD"):
        runtime_env(tmp_path, env={"MLFLOW_TRACKING_PASSWORD": "x"})


def test_passwords_in_uris_never_reach_the_entrypoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:hunter2@mlflow:5000")
    with pytest.raises(StudyError, match="MLFLOW_TRACKING_URI: a password"):
        entrypoint("s.yaml")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(StudyError, match="--tracking-uri: a password"):
        entrypoint("s.yaml", tracking_uri="http://alice:hunter2@mlflow:5000")


def test_trial_env_sets_each_setting_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a Ray job, the driver hands on only what the job's runtime env does not already carry."""
    import json

    from studies.runner import trial_env

    for name in [k for k in os.environ if k.startswith("CHEMTUNE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CHEMTUNE_HOME", "/shared/runs")
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert trial_env("http://m:5000") == {"CHEMTUNE_HOME": "/shared/runs", "MLFLOW_TRACKING_URI": "http://m:5000"}
    # A KubeRay RayJob / `ray job submit --runtime-env-json` that already sets both, with the same values:
    job = {"runtime_env": {"env_vars": {"CHEMTUNE_HOME": "/shared/runs", "MLFLOW_TRACKING_URI": "http://m:5000"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert trial_env("http://m:5000") == {}
    # ... with another tracking URI than the study's: the trials would log elsewhere, so it is refused.
    with pytest.raises(StudyError, match="sets MLFLOW_TRACKING_URI to a different value"):
        trial_env("http://study-server:5000")


@pytest.mark.parametrize(("state", "code"), [("SUCCEEDED", 0), ("FAILED", 1), ("STOPPED", 1)])
def test_status_wait_exit_code_says_how_the_job_ended(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str], state: str, code: int) -> None:
    from cluster import jobs
    from studies.cli import main

    asked: list[tuple[str, str, float]] = []
    monkeypatch.setattr(jobs, "wait", lambda job, address, timeout: asked.append((job, address, timeout)) or state)
    monkeypatch.setattr(jobs, "status", lambda job, address: state)
    assert main(["status", "raysubmit_1", "--address", "http://head:8265", "--wait", "--timeout", "60"]) == code
    assert main(["status", "raysubmit_1", "--address", "http://head:8265"]) == code
    assert capsys.readouterr().out.split() == [state, state]
    assert asked == [("raysubmit_1", "http://head:8265", 60.0)]


def test_status_wait_timeout_is_a_failure(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from cluster import jobs
    from studies.cli import main

    def never(job: str, address: str, timeout: float) -> str:
        raise TimeoutError(f"job {job} still RUNNING after {timeout:.0f}s")

    monkeypatch.setattr(jobs, "wait", never)
    assert main(["status", "raysubmit_1", "--address", "http://head:8265", "--wait", "--timeout", "5"]) == 1
    assert "still RUNNING after 5s" in capsys.readouterr().out
