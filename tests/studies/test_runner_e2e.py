"""The whole path: YAML -> Ray Tune -> MLflow -> leaderboard -> registry -> load and predict."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from studies.cli import main as cli
from studies.runner import launch
from studies.spec import load_study, parse_study
from studies.tracking import StudyPaths, leaderboard, register_best, tracking_uri_scope
from tests.conftest import tiny_study
from trainables.errors import DataError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("store")
    study_file = root / "e2e.yaml"
    study_file.write_text(yaml.safe_dump(tiny_study(name="e2e", num_trials=3, max_epochs=2)))
    result = launch(load_study(study_file), root=root)
    yield root, result
    ray.shutdown()


def test_parent_and_three_finished_child_runs(finished) -> None:
    root, result = finished
    client = MlflowClient(result.tracking_uri)
    runs = client.search_runs([result.experiment_id])
    parents = [r for r in runs if r.data.tags.get("chemtune.role") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 3 and {r.info.status for r in children} == {"FINISHED"}
    import threading  # the study is over: its Optuna heartbeat no longer beats in this (living) process

    assert not [t for t in threading.enumerate() if t.name == "optuna-heartbeat"]
    for run in children:
        assert {"valid_rmse", "valid_r2", "train_loss", "trainable_params"} <= set(run.data.metrics)
        assert run.data.tags["split_hash.test"] == parents[0].data.tags["split_hash.test"]
        assert run.data.params["method"] in {"full", "bitfit", "lora", "ia3"}
        history = client.get_metric_history(run.info.run_id, "valid_rmse")
        assert [m.step for m in history] == list(range(1, len(history) + 1))
    assert any("test_rmse" in r.data.metrics for r in children)  # at least one trial ran all epochs
    report = json.loads(Path(client.download_artifacts(result.parent_run_id, "data_report.json")).read_text())
    assert report[0]["n_rows"] == 4999 and report[0]["issues"]["invalid SMILES"]["count"] == 8


def test_optuna_study_lives_in_the_rdb(finished) -> None:
    root, result = finished
    study = optuna.load_study(study_name="e2e", storage=StudyPaths.default(root).optuna_url)
    assert len(study.trials) == 3
    # ASHA may stop a trial after epoch 1: PRUNED in Optuna, tagged so on its MLflow run
    client = MlflowClient(result.tracking_uri)
    tags = {int(r.data.tags["chemtune.optuna_trial"]): r.data.tags["chemtune.state"]
            for r in client.search_runs([result.experiment_id], "tags.`chemtune.role` = 'trial'")}
    expected = {optuna.trial.TrialState.COMPLETE: "complete", optuna.trial.TrialState.PRUNED: "pruned"}
    assert {t.number: expected[t.state] for t in study.trials} == tags


def test_leaderboard_is_sorted_by_the_metric(finished) -> None:
    _, result = finished
    board = leaderboard("e2e", result.tracking_uri)
    assert list(board["rank"]) == [1, 2, 3]
    assert list(board["state"]) == sorted(board["state"], key=lambda s: s != "complete")  # complete ones first
    for _, group in board.groupby("state"):
        assert group["valid_rmse"].is_monotonic_increasing
    by_r2 = leaderboard("e2e", result.tracking_uri, metric="valid_r2")
    for _, group in by_r2.groupby("state"):
        assert group["valid_r2"].is_monotonic_decreasing


def test_register_load_and_predict(finished, tmp_path: Path) -> None:
    _, result = finished
    version = register_best("e2e", "e2e-model", result.tracking_uri, alias="champion")
    assert int(version.version) == 1
    client = MlflowClient(result.tracking_uri)
    assert int(client.get_model_version_by_alias("e2e-model", "champion").version) == 1
    best_run = leaderboard("e2e", result.tracking_uri).iloc[0]
    assert client.get_model_version("e2e-model", "1").tags["chemtune.trial_id"] == best_run["trial"]
    with tracking_uri_scope(result.tracking_uri):
        model = mlflow.pyfunc.load_model("models:/e2e-model@champion")
    out = model.predict(pd.DataFrame({"smiles": ["CCO", "c1ccccc1CCN", "C1CC"]}))
    assert out["prediction"].iloc[:2].notna().all() and pd.isna(out["prediction"].iloc[2])
    assert out["error"].tolist() == ["", "", "invalid SMILES"]


def test_cli_leaderboard_register_and_predict(finished, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, result = finished
    assert cli(["leaderboard", "e2e", "--root", str(root), "--format", "json", "--top", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and (rows[0]["state"], rows[0]["valid_rmse"]) <= (rows[1]["state"], rows[1]["valid_rmse"])
    assert cli(["register", "e2e", "--root", str(root), "--model-name", "cli-model", "--alias", "best"]) == 0
    (tmp_path / "in.csv").write_text("smiles\nCCO\nxyz\n")
    assert cli(["predict", "models:/cli-model@best", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"),
                "--root", str(root)]) == 0
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert out["error"].tolist() == ["", "invalid SMILES"]


def test_relaunch_needs_resume_or_restart(finished) -> None:
    root, _ = finished
    with pytest.raises(Exception, match="was launched before"):
        launch(parse_study(tiny_study(name="e2e")), root=root)


def test_bad_data_fails_before_any_trial(tmp_path: Path) -> None:
    csv = tmp_path / "mols.csv"
    csv.write_text("smiles,y\n" + "".join(f"{'C' * (i % 5 + 1)}O,{i}\n" for i in range(5)) + "C1CC,1\nxx,2\n")
    spec = parse_study(tiny_study(name="bad", dataset={"name": "csv", "path": str(csv), "smiles_column": "smiles",
                                                       "target_column": "y", "limit": None}))
    with pytest.raises(DataError, match=r"(?s)mols.csv: 28.6% of the rows are bad.*invalid SMILES: 2 \(first rows 7, 8\)"):
        launch(spec, root=tmp_path / "store")
    store = StudyPaths.default(tmp_path / "store")
    assert not store.state_file("bad").exists()  # no study was started, no MLflow run was created
    assert not (tmp_path / "store" / "mlflow.db").exists()
