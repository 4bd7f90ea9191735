"""``register --top N``: one pyfunc over an LM trial and a D-MPNN trial, weighted by a fit on valid, with the
weighted spread as uncertainty."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from ray import tune

import studies.ensemble
from studies.ensemble import ensemble_weights, register_ensemble
from studies.spec import parse_study
from studies.tracking import MLflowTrialCallback, StudyPaths, StudyTracker, leaderboard, tracking_uri_scope
from tests.conftest import tiny_study
from trainables import TASKS, NullReporter
from trainables.errors import StudyError

pytestmark = pytest.mark.usefixtures("chemprop_installed")  # fails, not skips, without it


def test_ensemble_of_an_lm_and_a_dmpnn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parse_study(tiny_study(name="tiny-ens", search_space="property_mix", max_epochs=1, dataset={"limit": 80}))
    prepared = TASKS.get("property").prepare(spec)
    paths = StudyPaths.default(tmp_path)
    tracker = StudyTracker(paths.mlflow_uri, spec, paths)
    tracker.log_study("", prepared)
    callback = MLflowTrialCallback(tracker.uri, tracker.experiment_id, tracker.parent_run_id, "property", prepared.tags)
    configs = {"lm": {"arch": "lm", "method": "full", "lr": 1e-3, "batch_size": 16},
               "dm": {"arch": "dmpnn", "dmpnn_hidden_size": 64, "dmpnn_batch_size": 16}}
    for trial_id, config in configs.items():  # two finished trials, logged by the study's own callback
        reporter = NullReporter(keep_dir=tmp_path / trial_id)
        final = TASKS.get("property").train(config, prepared.payload, spec, reporter)
        trial = SimpleNamespace(trial_id=trial_id, config=config, last_result=final, error_file=None,
                                checkpoint=tune.Checkpoint.from_directory(str(tmp_path / trial_id)))
        callback.on_trial_start(0, [], trial)
        callback.on_trial_result(0, [], trial, {**final, "training_iteration": 1})
        callback.on_trial_complete(0, [], trial)

    with pytest.raises(StudyError, match=r"has 2 complete trial\(s\) .*--top 3 needs 3"):
        register_ensemble(spec.name, "lipo-ens", tracker.uri, top=3)
    reads: list[str] = []  # the order in which prediction files are read and the weights are fitted
    download = MlflowClient.download_artifacts
    monkeypatch.setattr(MlflowClient, "download_artifacts",
                        lambda self, run_id, path, dst=None: reads.append(path) or download(self, run_id, path, dst))
    monkeypatch.setattr(studies.ensemble, "ensemble_weights",
                        lambda frames: reads.append("fit") or ensemble_weights(frames))
    version = register_ensemble(spec.name, "lipo-ens", tracker.uri, top=2)
    assert reads.index("fit") < reads.index("test_predictions.csv")  # fitted before any test prediction is read
    assert set(reads[: reads.index("fit")]) == {"valid_predictions.csv"}

    client = MlflowClient(tracker.uri)
    tags = client.get_model_version("lipo-ens", version.version).tags
    assert tags["chemtune.ensemble.weights_fit"] == "valid"
    board = leaderboard(spec.name, tracker.uri)
    order = list(board[board["role"] == "trial"]["trial"].head(2))  # members in rank order
    by_trial = dict(zip(board["trial"], board["run_id"]))
    weights = np.array([json.loads(tags["chemtune.ensemble.weights"])[by_trial[t]] for t in order])
    valids = [pd.read_csv(tmp_path / t / "valid_predictions.csv") for t in order]
    np.testing.assert_allclose(weights, ensemble_weights(valids), atol=1e-5)
    assert weights.sum() == pytest.approx(1.0, abs=1e-5)
    tests = [pd.read_csv(tmp_path / t / "test_predictions.csv").set_index("id") for t in order]
    both = np.stack([tests[0]["prediction"], tests[1]["prediction"].loc[tests[0].index]])
    mean = pd.Series(weights @ both, index=tests[0].index)
    rmse = float(np.sqrt(np.mean((mean - tests[0]["target"]) ** 2)))
    row = board[board["role"] == "ensemble"].iloc[0]
    assert row["trial"] == "ensemble:top2" and row["test_rmse"] == pytest.approx(rmse)
    assert set(board["role"]) == {"trial", "ensemble"}
    card = client.get_model_version("lipo-ens", version.version).description
    assert f"| test_rmse | {rmse:.4f} |" in card and "| member1.arch |" in card and "## Seeds" in card
    assert "fitted on valid" in card

    with tracking_uri_scope(tracker.uri):
        model = mlflow.pyfunc.load_model(f"models:/lipo-ens/{version.version}")
    smiles = list(tests[0]["smiles"])
    out = model.predict(pd.DataFrame({"smiles": smiles + ["C1CC"]}))
    np.testing.assert_allclose(out["prediction"][:-1].astype(float), mean.to_numpy(), rtol=1e-4, atol=1e-4)
    spread = np.sqrt(weights[0] * weights[1]) * np.abs(both[0] - both[1])  # two members' weighted std
    np.testing.assert_allclose(out["uncertainty"][:-1].astype(float), spread, rtol=1e-3, atol=1e-4)
    assert out["prediction"].iloc[-1] is None and out["error"].iloc[-1] == "invalid SMILES"  # null when served
