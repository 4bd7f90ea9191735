"""The served endpoint answers strict JSON: ``mlflow models serve`` on loopback, a property and a retro model.

A bad row (invalid or blank SMILES) used to come back as ``"prediction": NaN``, which a browser's or another
language's JSON parser rejects, losing the whole answer. Here the real scoring server (``--env-manager local``,
127.0.0.1, a free port) serves registered tiny models and its answers are parsed with a parser that refuses
``NaN``/``Infinity``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import mlflow
import pytest

from studies.store import tracking_uri_scope

ROWS = ["CC(=O)Nc1ccccc1", "C1CC", ""]  # valid, invalid (unclosed ring), blank


def strict_loads(text: str) -> Any:
    """``json.loads`` that refuses the non-JSON constants Python's encoder writes for NaN and infinities."""

    def refuse(token: str) -> Any:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _property_folder(path: Path) -> Path:
    """A tiny-bert with a fresh regression head, saved as a trial saves it."""
    from types import SimpleNamespace

    from trainables.models.backbones import load_backbone
    from trainables.models.regression import HeadConfig, RegressionModel
    from trainables.property.serving import save_property_model

    spec = SimpleNamespace(name="tiny-bert", path=None, max_length=64, trust_remote_code=False)
    backbone, tokenizer = load_backbone(spec, ["CCO", "CC(=O)Nc1ccccc1", "c1ccccc1Br"], seed=0)
    config = HeadConfig(hidden_size=64, head_hidden=16, target_mean=1.0, target_std=2.0)
    model = RegressionModel(backbone, config)
    save_property_model(path, backbone, tokenizer, model.head, config)
    return path


def _retro_folder(path: Path) -> Path:
    from tests.trainables.retro.conftest import SMILES, model_spec
    from trainables.retro.models import load_seq2seq
    from trainables.retro.predictor import save_retro_model

    model, tokenizer = load_seq2seq(model_spec(), SMILES, seed=0)
    save_retro_model(path, model, tokenizer, None, num_beams=2)
    return path


def _register(uri: str, name: str, python_model: Any, folder: Path) -> None:
    """Log the model as the tracker does and give it the ``champion`` alias."""
    from mlflow.tracking import MlflowClient

    # An explicit artifact location: a sqlite store's default is ./mlruns in the working directory.
    artifacts = (folder.parent / f"artifacts-{name}").as_uri()
    with tracking_uri_scope(uri):
        experiment = mlflow.create_experiment(f"served-{name}", artifact_location=artifacts)
    with tracking_uri_scope(uri), mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(name="model", python_model=python_model, artifacts={"model": str(folder)},
                                       pip_requirements=["chemtune"],
                                       signature=python_model.model_signature(folder))
        version = mlflow.register_model(info.model_uri, name)
    MlflowClient(uri).set_registered_model_alias(name, "champion", version.version)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """Both models registered, then one ``mlflow models serve`` each (started together: each loads torch)."""
    from trainables.property.serving import PropertyPyfunc
    from trainables.retro.serving import RetroPyfunc

    tmp = tmp_path_factory.mktemp("served")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with tracking_uri_scope(uri):
        mlflow.set_experiment("served")
    _register(uri, "logp", PropertyPyfunc(), _property_folder(tmp / "logp"))
    _register(uri, "retro", RetroPyfunc(), _retro_folder(tmp / "retro"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                         os.environ.get("PYTHONPATH")]))}
    ports, procs = {}, []
    for name in ("logp", "retro"):
        ports[name] = _free_port()
        log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append((subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{name}@champion", "--env-manager",
             "local", "-h", "127.0.0.1", "-p", str(ports[name]), "-w", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log))
    try:
        for (proc, _), (name, port) in zip(procs, ports.items()):
            _wait_ready(proc, port, tmp / f"{name}.log")
        yield ports
    finally:
        for proc, log in procs:  # the server's own process group: its uvicorn workers too
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            log.close()


def _wait_ready(proc: subprocess.Popen, port: int, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow models serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    pytest.fail(f"mlflow models serve did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _invoke(port: int, column: str) -> list[dict[str, Any]]:
    body = json.dumps({"dataframe_split": {"columns": [column], "data": [[s] for s in ROWS]}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        text = answer.read().decode()
    return strict_loads(text)["predictions"]  # raises on NaN: the answer must be JSON


def test_strict_parser_refuses_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        strict_loads('{"prediction": NaN}')


def test_property_endpoint_answers_null_for_bad_rows(servers: dict[str, int]) -> None:
    rows = _invoke(servers["logp"], "smiles")
    assert [r["smiles"] for r in rows] == ROWS
    good, invalid, blank = rows
    assert isinstance(good["prediction"], float) and good["canonical_smiles"] == "CC(=O)Nc1ccccc1"
    assert good["error"] == ""
    for bad in (invalid, blank):
        assert bad["prediction"] is None and bad["canonical_smiles"] is None
        assert bad["error"] == "invalid SMILES"


def test_retro_endpoint_answers_null_for_bad_rows(servers: dict[str, int]) -> None:
    rows = _invoke(servers["retro"], "product")
    assert [r["product"] for r in rows] == ROWS
    good, invalid, blank = rows
    assert good["error"] == "" and isinstance(good["prediction_1"], str)
    for bad in (invalid, blank):
        assert bad["canonical_product"] is None and bad["error"] == "invalid SMILES"
        assert all(bad[k] is None or isinstance(bad[k], str) for k in bad)
