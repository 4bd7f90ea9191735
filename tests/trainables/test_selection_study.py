"""Each selection method runs as a trial inside a study, end to end (Ray Tune + Optuna + MLflow)."""

from __future__ import annotations

import pytest

from studies.spec import parse_study

FIXED = {
    "influence": {"top_k": 10, "lissa_depth": 20},
    "curriculum": {"curriculum_bins": 3},
    "active": {"acquisition": "uncertainty", "n_select": 8, "rounds": 1, "mc_passes": 4, "head_dropout": 0.2},
}


@pytest.mark.slow
@pytest.mark.long  # ~90 s; CI runs each selector's trial in tests/trainables/test_selection_*.py
def test_selection_methods_run_as_study_trials(tmp_path, monkeypatch):
    import ray
    from mlflow.tracking import MlflowClient

    from studies.runner import launch

    monkeypatch.setenv("CHEMTUNE_CACHE", str(tmp_path / "cache"))
    try:
        for method, knobs in FIXED.items():
            spec = parse_study({
                "name": f"tiny-{method}", "task": "property",
                "dataset": {"name": "nci-logp", "limit": 200, "split": "random",
                            "fractions": {"valid": 0.1, "test": 0.1, "pool": 0.3}},
                "model": {"name": "tiny-bert", "max_length": 64}, "search_space": "selection",
                "fixed": {"selection": method, "method": "full", "batch_size": 32, **knobs},
                "num_trials": 1, "max_epochs": 2, "resources": {"cpus_per_trial": 1},
                "scheduler": {"grace_period": 2},  # the active round trains at epoch 2: no rung before it
                "baselines": {"random_forest": False},
            })
            result = launch(spec, root=tmp_path / "runs")
            assert result.num_errors == 0, method
            board = result.leaderboard
            assert len(board) == 1 and board.loc[0, "status"] == "FINISHED" and board.loc[0, "test_rmse"] > 0
            client = MlflowClient(result.tracking_uri)
            run = client.get_run(board.loc[0, "run_id"])
            assert run.data.params["selection"] == method
            artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert "selection.csv" in artifacts, (method, artifacts)
            history = client.get_metric_history(run.info.run_id, "n_train_rows")
            assert len(history) == 2
            if method == "influence":
                assert run.data.metrics["influence_top_k"] == 10
            if method == "active":
                assert history[1].value == history[0].value + 8
    finally:
        ray.shutdown()
