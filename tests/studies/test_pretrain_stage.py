"""Pretraining as a study on the embedded default (Ray Tune, Optuna, MLflow): an MLM checkpoint registered and
fine-tuned by a property study through ``models:/``; a denoising stage named by a retro study (``model.pretrain``)
run once by ``launch``, cached by content hash and reused by the next study; ``validate`` says which."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import ray
import torch
import yaml
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from studies.cli import main as cli
from studies.pretraining import STAGE_JSON, checkpoint_dir, stage_key
from studies.runner import launch
from studies.spec import load_study, parse_study
from studies.store import tracking_uri_scope
from tests.conftest import ROOT, tiny_pretrain_study, tiny_study
from trainables.models.resolve import fetch_model

pytestmark = pytest.mark.slow


@pytest.fixture
def stage_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Pretrained checkpoints in a fresh folder (the canonical-SMILES cache stays shared)."""
    folder = tmp_path / "cache"
    monkeypatch.setattr("studies.pretraining.cache_dir", lambda: folder)
    return folder


def _trial_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("chemtune.role") == "trial"]


def test_mlm_study_registers_and_its_checkpoint_feeds_a_property_study(tmp_path: Path, stage_cache: Path) -> None:
    root = tmp_path / "store"
    spec = parse_study(tiny_pretrain_study("tiny-bert", name="mlm-e2e"))
    try:
        result = launch(spec, root=root)
        assert result.num_errors == 0
        (run,) = _trial_runs(result.tracking_uri, "mlm-e2e")
        for metric in ("valid_token_acc", "valid_exact", "test_token_acc", "test_loss", "train_tokens_per_s"):
            assert metric in run.data.metrics
        assert 0 < run.data.metrics["valid_token_acc"] < 1
        assert run.data.tags["chemtune.objective"] == "mlm" and run.data.tags["chemtune.corpus_hash"]
        folder = checkpoint_dir(spec, stage_key(spec, run.data.tags["chemtune.corpus_hash"]))
        stage = json.loads((folder / STAGE_JSON).read_text())
        assert stage["run_id"] == run.info.run_id and (folder / "config.json").is_file()
        assert cli(["register", "mlm-e2e", "--model-name", "tiny-mlm", "--alias", "champion", "--root", str(root)]) == 0
        prop = parse_study(tiny_study(name="prop-from-mlm", num_trials=1, max_epochs=1, fixed={"method": "full"},
                                      model={"name": "tiny-bert", "path": "models:/tiny-mlm@champion"}))
        fine = launch(prop, root=root)
        assert fine.num_errors == 0 and fine.best_config is not None
    finally:
        ray.shutdown()
    with tracking_uri_scope(fine.tracking_uri):
        local = fetch_model("models:/tiny-mlm@champion")
    fetched, cached = load_file(local / "model.safetensors"), load_file(folder / "model.safetensors")
    assert fetched.keys() == cached.keys() and all(torch.equal(fetched[k], cached[k]) for k in cached)
    with tracking_uri_scope(fine.tracking_uri):  # the registered checkpoint serves embeddings
        served = mlflow.pyfunc.load_model("models:/tiny-mlm@champion").predict(
            pd.DataFrame({"smiles": ["OCC", "not a molecule"]}))
    assert served["canonical_smiles"][0] == "CCO" and len(json.loads(served["embedding"][0])) == 64  # tiny-bert width
    assert served["error"].tolist() == ["", "invalid SMILES"]


def test_retro_study_runs_its_pretraining_stage_once_and_reuses_it(tmp_path: Path, stage_cache: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "store"
    smoke = ROOT / "studies" / "pretrain_tiny_bart_smoke.yaml"

    def retro(name: str) -> Path:  # fix_encoder needs a pretrained model: the stage's checkpoint counts
        study = {"name": name, "task": "retro", "search_space": "retro", "metric": "valid_top1",
                 "dataset": {"name": "uspto50k", "limit": 16, "split": "random"},
                 "model": {"name": "tiny-bart", "pretrain": str(smoke), "max_length": 64},
                 "fixed": {"gamma": 0, "treatment": "fix_encoder", "batch_size": 16},
                 "num_trials": 1, "max_epochs": 1, "options": {"val_subset": 2, "test_limit": 2, "eval_batch_size": 16},
                 "resources": {"cpus_per_trial": 1}}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(study))
        return path

    first, second = retro("retro-a"), retro("retro-b")
    assert cli(["validate", str(first), "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "checkpoint not cached" in out and "leakage guard: in uspto50k" in out
    try:
        result = launch(load_study(first), root=root)
        assert result.num_errors == 0
        assert len(_trial_runs(result.tracking_uri, "pretrain-tiny-bart-smoke")) == 1
        (folder,) = list((stage_cache / "pretrained").iterdir())
        stamp = (folder / STAGE_JSON).stat().st_mtime_ns
        (run,) = _trial_runs(result.tracking_uri, "retro-a")
        assert MlflowClient(result.tracking_uri).get_run(result.parent_run_id).data.params["model.path"] == str(folder)
        assert cli(["validate", str(second), "--root", str(root)]) == 0
        assert f"checkpoint cached at {folder}" in capsys.readouterr().out.replace("\n", "")
        again = launch(load_study(second), root=root)
        assert again.num_errors == 0
    finally:
        ray.shutdown()
    assert len(_trial_runs(result.tracking_uri, "pretrain-tiny-bart-smoke")) == 1  # not pretrained again
    assert (folder / STAGE_JSON).stat().st_mtime_ns == stamp
