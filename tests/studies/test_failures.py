"""A crashed trial never leaves a run RUNNING, and `resume` retries it from where the study stopped."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient
from transformers import BertConfig, BertModel

from studies.runner import launch, resume
from studies.spec import DatasetSpec, parse_study
from tests.conftest import tiny_study
from trainables.data.datasets import DATASETS
from trainables.models.tokenizer import BERT_SPECIALS, build_vocab, smiles_tokenizer

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
        why = {r.info.run_id: (r.info.status, r.data.tags.get("chemtune.model_error"), r.data.tags.get("chemtune.error"))
               for r in runs}
        assert {r.info.status for r in runs} == {"FINISHED"}, why
        assert resumed.best_config is not None and resumed.num_errors == 0
        assert "valid_rmse" in runs[0].data.metrics or "valid_rmse" in runs[1].data.metrics
    finally:
        ray.shutdown()


def test_a_ctrl_c_that_tune_swallows_still_ends_the_study_as_killed(monkeypatch) -> None:
    """Tune answers SIGINT by stopping the trials, saving the experiment and returning normally. Seen on the
    champion study: the driver then closed the study run FINISHED and started the seed repeats."""
    from types import SimpleNamespace

    from studies import runner

    closed: list[str] = []
    tracker = SimpleNamespace(spec=SimpleNamespace(name="s"), close=closed.append)
    monkeypatch.setattr(runner, "stop_heartbeats", lambda: 0)
    monkeypatch.setattr(runner, "_interrupted", lambda results: results == "cut")
    with pytest.raises(KeyboardInterrupt, match="chemtune resume s"):
        runner._fit(SimpleNamespace(fit=lambda: "cut"), tracker)
    assert runner._fit(SimpleNamespace(fit=lambda: "ran out"), tracker) == "ran out"
    assert closed == ["KILLED", "FINISHED"]


def test_interrupted_tells_a_real_ctrl_c_from_a_study_that_ran_out(tmp_path: Path) -> None:
    """Against Ray Tune itself: a run whose trials finished or were stopped by ASHA ran out; a run stopped by
    SIGINT mid-trial did not (Tune marks those trials TERMINATED, like finished ones)."""
    import signal

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from studies.runner import _interrupted

    def report_steps(config: dict) -> None:  # defined here: Ray pickles it by value (a test module is not importable)
        for step in range(config["steps"]):
            time.sleep(config["sleep"])
            tune.report({"loss": config["loss"] + step, "step": step + 1})

    def run(name: str, configs: list[dict], callbacks: list) -> tune.ResultGrid:
        space = {"loss": tune.grid_search([c["loss"] for c in configs]), "steps": configs[0]["steps"],
                 "sleep": configs[0]["sleep"]}
        scheduler = ASHAScheduler(time_attr="step", max_t=configs[0]["steps"], grace_period=1, reduction_factor=2)
        return tune.Tuner(
            report_steps, param_space=space,
            tune_config=tune.TuneConfig(metric="loss", mode="min", scheduler=scheduler, max_concurrent_trials=2),
            run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), callbacks=callbacks, verbose=0),
        ).fit()

    class CtrlC(tune.Callback):  # a user's Ctrl-C once a trial has reported
        def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
            os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, lambda *args: None)  # never a KeyboardInterrupt in pytest itself
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        ran_out = run("ran-out", [{"loss": x, "steps": 3, "sleep": 0.0} for x in (0.0, 10.0, 20.0, 30.0)], [])
        assert any(r.metrics["step"] < 3 for r in ran_out)  # ASHA stopped one early: that still ran out
        assert not _interrupted(ran_out)
        cut = run("cut", [{"loss": x, "steps": 200, "sleep": 0.2} for x in (0.0, 1.0, 2.0)], [CtrlC()])
        assert all(r.error is None for r in cut) and _interrupted(cut)
    finally:
        ray.shutdown()
        signal.signal(signal.SIGINT, previous)
