"""A cost-aware study end to end: ``objectives: [valid_rmse, trainable_params]`` on Ray Tune, its driver killed
and the study resumed, its Pareto front in the leaderboard, the report and MLflow; ``register --rule
cheapest-within:0.02`` and ``promote --seeds 3`` register models whose cards carry the numbers.

One study (module fixture) serves every test: tiny-bert, 160 molecules, 2 epochs, 4 trials.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from studies.cli import main as cli
from studies.results import leaderboard
from studies.runner import resume
from studies.tracking import StudyPaths, tracking_uri_scope
from tests.conftest import tiny_study
from tests.faults.test_driver_kills import _Driver, _log

pytestmark = pytest.mark.slow
NAME = "cost"


def _wait_for_a_trial_run(client: MlflowClient, root: Path, driver: _Driver, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and driver.proc.poll() is None:
        experiment = client.get_experiment_by_name(NAME) if (root / "mlflow.db").exists() else None
        if experiment and client.search_runs([experiment.experiment_id], "tags.`chemtune.role` = 'trial'"):
            return
        time.sleep(1)
    pytest.fail("no trial started before the kill: " + _log(root))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Any:
    """Launched by a `chemtune launch` process that is SIGKILLed once a trial runs, then resumed here."""
    root = tmp_path_factory.mktemp("cost")
    path = root / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(tiny_study(
        name=NAME, num_trials=4, max_epochs=2, dataset={"limit": 160}, objectives=["valid_rmse", "trainable_params"],
        fixed={"batch_size": 32}, ranges={"method": ["full", "lora", "bitfit"]}, scheduler={"grace_period": 2},
        resources={"cpus_per_trial": 1, "reuse_actors": True},
    )))
    paths = StudyPaths.default(root)
    client = MlflowClient(paths.mlflow_uri)
    driver = _Driver(["launch", str(path)], root, shared_data, "local")  # its own local Ray, killed with it
    _wait_for_a_trial_run(client, root, driver)
    time.sleep(3)
    assert driver.proc.poll() is None, "the driver ended before the kill: " + _log(root)
    driver.kill()
    result = resume(NAME, root=root)
    yield root, paths.mlflow_uri, result
    ray.shutdown()


def test_the_study_searched_two_objectives_and_survived_the_kill(study) -> None:
    root, uri, result = study
    ot = optuna.load_study(study_name=NAME, storage=StudyPaths.default(root).optuna_url)
    assert [d.name for d in ot.directions] == ["MINIMIZE", "MINIMIZE"]
    assert ot.metric_names == ["valid_rmse", "trainable_params"]
    complete = [t for t in ot.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4 and all(len(t.values) == 2 for t in complete)
    parent = MlflowClient(uri).get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["chemtune.objectives"] == "valid_rmse,trainable_params"


def test_leaderboard_marks_optunas_front_and_sorts_by_a_cost(study) -> None:
    root, uri, _ = study
    board = leaderboard(NAME, uri)
    ot = optuna.load_study(study_name=NAME, storage=StudyPaths.default(root).optuna_url)
    front = {t.number for t in ot.best_trials}
    assert set(board.loc[board["pareto"], "optuna_trial"]) == front
    # each trial's logged objectives are the values Optuna was told; its Optuna trial names its run
    told = {t.number: t for t in ot.trials if t.state.name == "COMPLETE"}
    for _, row in board[board["state"] == "complete"].iterrows():
        assert [row["valid_rmse"], row["trainable_params"]] == pytest.approx(told[row["optuna_trial"]].values)
        assert told[row["optuna_trial"]].user_attrs["mlflow_run_id"] == row["run_id"]
    by_cost = leaderboard(NAME, uri, "trainable_params")
    params = by_cost[by_cost["state"] == "complete"]["trainable_params"].tolist()
    assert params == sorted(params) and by_cost.attrs["mode"] == "min"
    assert (board["device_seconds"].dropna() > 0).all() and (board["predict_ms_per_1k"].dropna() > 0).all()


def test_report_and_study_run_carry_the_front(study, tmp_path: Path) -> None:
    root, uri, result = study
    out = tmp_path / "report.html"
    assert cli(["report", NAME, "-o", str(out), "--root", str(root)]) == 0
    page = out.read_text()
    assert 'id="plot-pareto_front"' in page and "<h2>Pareto front</h2>" in page
    client = MlflowClient(uri)
    board = leaderboard(NAME, uri)
    tag = client.get_run(result.parent_run_id).data.tags["chemtune.pareto_front"]
    assert set(tag.split(", ")) == set(board.loc[board["pareto"], "trial"])
    front = pd.read_csv(client.download_artifacts(result.parent_run_id, "pareto_front.csv", str(tmp_path)))
    assert set(front["run_id"]) == set(board.loc[board["pareto"], "run_id"])
    assert "plots/pareto_front.png" in {a.path for a in client.list_artifacts(result.parent_run_id, "plots")}


def test_register_cheapest_within_records_its_rule_and_card(study) -> None:
    root, uri, _ = study
    assert cli(["register", NAME, "--model-name", "cost-cheap", "--rule", "cheapest-within:0.02",
                "--root", str(root)]) == 0
    board = leaderboard(NAME, uri)
    done = board[(board["state"] == "complete") & board["model_uri"].notna()]
    near = done[done["valid_rmse"] <= done["valid_rmse"].min() + 0.02]
    expected = near.sort_values(["trainable_params", "valid_rmse"]).iloc[0]
    version = MlflowClient(uri).get_model_version("cost-cheap", "1")
    assert version.tags["chemtune.run_id"] == expected["run_id"]
    assert version.tags["chemtune.rule"] == "cheapest-within:0.02"
    card = version.description
    assert f"| valid_rmse | {expected['valid_rmse']:.4f} |" in card
    assert f"| trainable_params | {int(expected['trainable_params']):,} |" in card
    assert "## Intended input" in card and "`smiles`" in card and "| mlflow |" in card
    assert all(f"| {split} | {h} |" in card for split, h in
               [(k.split(".", 1)[1], v) for k, v in version.tags.items() if k.startswith("split_hash.")])


def test_promote_refits_three_seeds_scores_test_once_and_registers_the_ensemble(study, monkeypatch) -> None:
    """Each refit reads the test labels only in its last epoch, after every training step, before its last report."""
    import studies.promote as promote_module
    import trainables
    from trainables.data.tables import MoleculeTable

    root, uri, _ = study
    events: list[str] = []

    class Watched(MoleculeTable):
        def __getattribute__(self, name: str) -> Any:
            if name == "targets":
                events.append("test labels")
            return super().__getattribute__(name)

    class Recording(trainables.NullReporter):
        def report(self, metrics: Any, checkpoint_dir: Any = None) -> None:
            events.append(f"report {metrics['epoch']}")
            super().report(metrics, checkpoint_dir)

    merge = promote_module.merge_train_valid

    def watched_merge(payload: Any) -> Any:
        import dataclasses

        merged = merge(payload)
        return dataclasses.replace(merged, test=Watched(**{f.name: getattr(merged.test, f.name)
                                                           for f in dataclasses.fields(merged.test)}))

    monkeypatch.setattr(promote_module, "merge_train_valid", watched_merge)
    monkeypatch.setattr(trainables, "NullReporter", Recording)
    assert cli(["promote", NAME, "--model-name", "cost-refit", "--seeds", "3", "--root", str(root)]) == 0
    runs = [e for e in events if e.startswith("report")]
    assert runs == ["report 1", "report 2"] * 3
    for seed in range(3):  # per refit: report 1, then test labels (read once per evaluation), then report 2
        part = events[events.index("report 1"):events.index("report 2") + 1]
        assert part[0] == "report 1" and part[-1] == "report 2" and set(part[1:-1]) == {"test labels"}
        events = events[events.index("report 2") + 1:]
    client = MlflowClient(uri)
    version = client.get_model_version("cost-refit", "1")
    refit = client.get_run(version.tags["chemtune.run_id"])
    assert refit.data.tags["chemtune.role"] == "refit" and version.tags["chemtune.seeds"] == "0,1,2"
    assert {f"seed{s}_test_rmse" for s in range(3)} <= set(refit.data.metrics)
    card = version.description
    assert "## Seeds\n0, 1, 2" in card and f"| test_rmse | {refit.data.metrics['test_rmse']:.4f} |" in card
    board = leaderboard(NAME, uri)
    best = board[board["role"] == "trial"].iloc[0]
    assert board[board["role"] == "refit"]["valid_rmse"].isna().all()  # in-sample: never logged, never ranked
    assert version.tags["chemtune.refit_of"] == best["run_id"]
    assert f"| valid_rmse | {best['valid_rmse']:.4f} |" in card  # the chosen trial's valid score
    assert f"| rows trained (train + valid) | {int(refit.data.params['refit_rows']):,} |" in card
    with tracking_uri_scope(uri):
        out = mlflow.pyfunc.load_model("models:/cost-refit@champion").predict(
            pd.DataFrame({"smiles": ["CCO", "C1CC"]}))
    assert out["n_members"].tolist() == [3, 3] and out["prediction"].iloc[1] is None
