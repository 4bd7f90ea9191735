"""A retro study of 2 trials end to end: Ray Tune -> MLflow (pyfunc) -> registry -> teacher labels."""

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import ray
from mlflow.tracking import MlflowClient

from studies.runner import launch
from studies.spec import parse_study
from studies.tracking import register_best, tracking_uri_scope
from tests.conftest import TINY_STUDIES
from trainables.retro.data import read_smi
from trainables.retro.teacher import teacher_from_model

pytestmark = pytest.mark.slow


def test_two_trial_retro_study(tmp_path: Path) -> None:
    study = {**TINY_STUDIES["retro"], "name": "retro-e2e", "num_trials": 2, "max_epochs": 2,
             "fixed": {"gamma": 0, "batch_size": 16}, "ranges": {"treatment": ["full", "lora_all+mlp_all"]},
             "scheduler": {"grace_period": 2}}
    try:
        result = launch(parse_study(study), root=tmp_path / "store")
    finally:
        ray.shutdown()
    assert result.num_errors == 0
    client = MlflowClient(result.tracking_uri)
    children = [r for r in client.search_runs([result.experiment_id])
                if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id]
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    for run in children:
        assert {"valid_top1", "valid_token_acc", "valid_loss", "test_top1", "test_top10", "test_invalid"} <= set(run.data.metrics)
        assert [m.step for m in client.get_metric_history(run.info.run_id, "valid_top1")] == [1, 2]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "test_predictions.csv" in artifacts
        assert run.data.tags["chemtune.model_uri"]  # model/ logged as the retro pyfunc

    # The best trial, registered, serves top-k reactants and can be a teacher for a gamma study.
    register_best("retro-e2e", "retro-e2e-model", result.tracking_uri, alias="champion")
    with tracking_uri_scope(result.tracking_uri):
        model = mlflow.pyfunc.load_model("models:/retro-e2e-model@champion")
        signature = model.metadata.signature  # logged by the tracker from the retro pyfunc
        assert signature.inputs.input_names() == ["product"] and signature.params.params[0].name == "num_beams"
        out = model.predict(pd.DataFrame({"product": ["CC(=O)Nc1ccccc1", "C1CC"]}))
        assert list(out.columns[:3]) == ["product", "canonical_product", "prediction_1"]
        assert out["error"].tolist() == ["", "invalid SMILES"]
        train, _ = read_smi(Path(study["dataset"]["path"]) / "train.smi")
        train = train.head(8)
        labels = teacher_from_model("models:/retro-e2e-model@champion", train.products, train.rows)
        assert len(labels.predictions) == 8
        assert len(labels.eligible) + labels.report.n_excluded == 8  # every row is usable or counted
