"""A crashed trial never leaves a run RUNNING, and `resume` retries it from where the study stopped."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient
from transformers import BertConfig, BertModel

from studies.runner import launch, resume
from studies.spec import parse_study
from tests.conftest import tiny_study
from trainables.data.datasets import DATASETS
from trainables.models.tokenizer import BERT_SPECIALS, build_vocab, smiles_tokenizer
from studies.spec import DatasetSpec

pytestmark = pytest.mark.slow


def _model_dir(path: Path) -> Path:
    table, _ = DATASETS.get("nci-logp").load(DatasetSpec(name="nci-logp"))
    tok = smiles_tokenizer(build_vocab(table.smiles, list(BERT_SPECIALS.values())), BERT_SPECIALS, 64)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=80)
    BertModel(config, add_pooling_layer=False).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_crashed_trial_is_failed_and_resume_retries_it(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path / "model")
    weights = model_dir / "model.safetensors"
    shutil.copy(weights, tmp_path / "good.safetensors")
    weights.write_bytes(b"not a safetensors file")  # every trial will crash loading it
    spec = parse_study(tiny_study(name="crashy", num_trials=1, max_epochs=1, max_failures=0,
                                  model={"name": "hf", "path": str(model_dir)}, fixed={"method": "full"}))
    root = tmp_path / "store"
    try:
        result = launch(spec, root=root)
        client = MlflowClient(result.tracking_uri)
        runs = client.search_runs([result.experiment_id])
        assert {r.info.status for r in runs} == {"FINISHED", "FAILED"}  # the study, the trial
        failed = [r for r in runs if r.info.status == "FAILED"]
        assert len(failed) == 1 and result.num_errors == 1 and result.best_config is None
        artifacts = [a.path for a in client.list_artifacts(failed[0].info.run_id)]
        assert "error.txt" in artifacts or "error.pkl" in artifacts

        shutil.copy(tmp_path / "good.safetensors", weights)  # the broken file is fixed ...
        resumed = resume("crashy", root=root)  # ... and the errored trial runs again
        runs = client.search_runs([result.experiment_id])
        assert len(runs) == 2  # the same trial run was re-opened, not duplicated
        assert {r.info.status for r in runs} == {"FINISHED"}
        assert resumed.best_config is not None and resumed.num_errors == 0
        assert "valid_rmse" in runs[0].data.metrics or "valid_rmse" in runs[1].data.metrics
    finally:
        ray.shutdown()


def test_a_ctrl_c_that_tune_swallows_still_ends_the_study_as_killed(monkeypatch) -> None:
    """Tune answers SIGINT by saving the experiment and returning normally, trials left RUNNING/PENDING.
    Seen on the champion study: the driver then closed the study run FINISHED and started the seed repeats."""
    from types import SimpleNamespace

    from studies import runner

    closed: list[str] = []
    tracker = SimpleNamespace(spec=SimpleNamespace(name="s"), close=closed.append)

    class results:  # the ResultGrid surface _fit reads: its length and Tune's counts by trial status
        def __init__(self, *statuses: str) -> None:
            self._experiment_analysis = SimpleNamespace(trials=[SimpleNamespace(status=s) for s in statuses])
            self.num_terminated, self.num_errors = statuses.count("TERMINATED"), statuses.count("ERROR")

        def __len__(self) -> int:
            return len(self._experiment_analysis.trials)

    monkeypatch.setattr(runner, "stop_heartbeats", lambda: 0)
    interrupted = SimpleNamespace(fit=lambda: results("TERMINATED", "RUNNING", "PENDING"))
    with pytest.raises(KeyboardInterrupt, match="chemtune resume s"):
        runner._fit(interrupted, tracker)
    finished = SimpleNamespace(fit=lambda: results("TERMINATED", "ERROR"))
    assert runner._fit(finished, tracker)._experiment_analysis.trials[1].status == "ERROR"
    assert closed == ["KILLED", "FINISHED"]
