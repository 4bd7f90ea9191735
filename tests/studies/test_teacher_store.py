"""A ``models:/`` teacher is looked up in the study's MLflow store, not in MLflow's default of the folder."""

from __future__ import annotations

import uuid
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from studies.cli import main
from studies.tracking import StudyPaths, tracking_uri_scope
from tests.conftest import TINY_STUDIES


class EchoTeacher(mlflow.pyfunc.PythonModel):
    """A stand-in teacher: predicts each product itself (a valid SMILES, so every row is usable)."""

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201 - MLflow's signature
        return pd.DataFrame({"prediction": model_input["product"]})


def test_validate_finds_a_teacher_registered_in_the_study_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("CHEMTUNE_HOME", str(home))
    name = f"echo-teacher-{uuid.uuid4().hex[:8]}"  # a new URI: the teacher's labels are cached per URI
    store = StudyPaths.default().mlflow_uri  # where `chemtune launch` and `chemtune register` keep models
    home.mkdir()
    experiment = mlflow.MlflowClient(store).create_experiment("teachers", (home / "artifacts").as_uri())
    with tracking_uri_scope(store), mlflow.start_run(experiment_id=experiment):
        mlflow.pyfunc.log_model(name="model", python_model=EchoTeacher(), registered_model_name=name)
    study = {**TINY_STUDIES["retro"], "name": "gamma", "options": {**TINY_STUDIES["retro"]["options"],
                                                                  "teacher_uri": f"models:/{name}/1"}}
    path = tmp_path / "gamma.yaml"
    path.write_text(yaml.safe_dump(study))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["validate", str(path)]) == 0, capsys.readouterr().out
    assert "valid" in capsys.readouterr().out
    assert list(work.iterdir()) == []  # no stray ./mlflow.db or ./mlruns


def test_tracking_uri_scopes_in_two_threads_do_not_redirect_each_other(tmp_path) -> None:
    """The tracking URI is process-global: without the scope's lock, one thread's exit restored the
    other's URI mid-call (CI: a racing ``register`` looked for its logged model in the wrong store)."""
    import threading
    import time

    seen: dict[str, list[str]] = {"a": [], "b": []}
    start = threading.Barrier(2)

    def work(key: str) -> None:
        uri = f"sqlite:///{tmp_path / key}.db"
        start.wait()
        for _ in range(5):
            with tracking_uri_scope(uri):
                time.sleep(0.01)  # a call into MLflow that takes a while
                seen[key].append(mlflow.get_tracking_uri())
            time.sleep(0.005)

    threads = [threading.Thread(target=work, args=(k,)) for k in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen["a"] == [f"sqlite:///{tmp_path / 'a'}.db"] * 5
    assert seen["b"] == [f"sqlite:///{tmp_path / 'b'}.db"] * 5
