"""Fault suite through Ray Tune: one study whose trials diverge, run out of memory, are SIGKILLed mid-epoch
and while writing a checkpoint (scenarios 1, 4, 5), with planted secrets grepped from every artefact
(scenario 9), then two `chemtune register` at once on its best model (scenario 8)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pytest
import ray
from mlflow.tracking import MlflowClient

from studies.runner import launch
from studies.spec import parse_study
from studies.tracking import StudyPaths, leaderboard
from tests.conftest import tiny_study
from tests.faults.conftest import record_figures
from trainables.faults import FAULTS_ENV, STATE_ENV

pytestmark = pytest.mark.slow

SECRET = "planted-Secret-7f3a9c"
MAX_FAILURES = 1
# lr -> the fault its trial meets (times: how often it may fire over the trial's attempts)
FAULTS = {
    0.0011: {"id": "nan", "kind": "nan", "epoch": 2, "times": 5},
    0.0012: {"id": "oom", "kind": "oom", "epoch": 1, "times": 5},
    0.0013: {"id": "kill", "kind": "kill", "epoch": 2, "times": 1},
    0.0014: {"id": "kill_ckpt", "kind": "kill_in_checkpoint", "epoch": 2, "times": 1},
}


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory, shared_data: Path):
    root = tmp_path_factory.mktemp("store")
    faults = [{**f, "match": {"lr": lr}} for lr, f in FAULTS.items() if f]
    planted = {FAULTS_ENV: json.dumps(faults), STATE_ENV: str(root / "fault-state"),
               "CHEMTUNE_API_TOKEN": SECRET, "MLFLOW_TRACKING_PASSWORD": SECRET, "CHEMTUNE_DATA_DIR": str(shared_data)}
    saved = {k: os.environ.get(k) for k in planted}
    os.environ.update(planted)
    spec = parse_study(tiny_study(
        name="faulty", num_trials=len(FAULTS), max_epochs=2, max_failures=MAX_FAILURES,
        dataset={"limit": 160}, fixed={"method": "full", "batch_size": 32},
        enqueue=[{"lr": lr} for lr in FAULTS], scheduler={"grace_period": 2},
    ))
    try:
        result = launch(spec, root=root)
        session = Path(ray._private.worker._global_node.get_session_dir_path())
        runtime_env = json.dumps(ray.get_runtime_context().runtime_env)
        yield root, result, session, runtime_env
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _runs_by_lr(result) -> dict[float, object]:
    client = MlflowClient(result.tracking_uri)
    runs = client.search_runs([result.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    return {float(r.data.params["lr"]): r for r in runs}


def _fired(root: Path, fault_id: str) -> int:
    return len(list((root / "fault-state").glob(f"{fault_id}.*")))


def test_bad_trials_fail_with_an_error_tag_after_max_failures_retries(faulty) -> None:
    root, result, _, _ = faulty
    runs = _runs_by_lr(result)
    assert len(runs) == len(FAULTS) and result.num_errors == 2
    nan, oom = runs[0.0011], runs[0.0012]
    assert nan.info.status == oom.info.status == "FAILED"
    assert nan.data.tags["chemtune.error"].startswith("TrialDiverged: training loss became nan at epoch 2, step 0")
    assert oom.data.tags["chemtune.error_type"] == "OutOfMemoryError"
    assert "CUDA out of memory" in oom.data.tags["chemtune.error"]
    for run, fault in ((nan, "nan"), (oom, "oom")):
        assert run.data.tags["chemtune.failures"] == str(1 + MAX_FAILURES)
        assert _fired(root, fault) == 1 + MAX_FAILURES  # tried once, retried max_failures times, no more
    # the NaN never became a metric; the diverged trial kept its epoch-1 results
    client = MlflowClient(result.tracking_uri)
    assert [m.value for m in client.get_metric_history(nan.info.run_id, "epoch")] == [1]


def test_optuna_is_told_fail_and_the_others_complete(faulty) -> None:
    root, _, _, _ = faulty
    study = optuna.load_study(study_name="faulty", storage=StudyPaths.default(root).optuna_url)
    states = {t.params["lr"]: t.state.name for t in study.trials}
    assert states == {0.0011: "FAIL", 0.0012: "FAIL", 0.0013: "COMPLETE", 0.0014: "COMPLETE"}
    assert sorted(t.number for t in study.trials) == list(range(len(FAULTS)))


@pytest.mark.parametrize("lr,fault", [(0.0013, "kill"), (0.0014, "kill_ckpt")])
def test_killed_trials_resume_from_their_checkpoint_without_repeating_an_epoch(faulty, lr: float, fault: str) -> None:
    root, result, _, _ = faulty
    run = _runs_by_lr(result)[lr]
    assert _fired(root, fault) == 1
    assert run.info.status == "FINISHED" and run.data.tags["chemtune.recovered"] == "true"
    assert run.data.tags["chemtune.failures"] == "1" and run.data.tags["chemtune.epochs"] == "2"
    client = MlflowClient(result.tracking_uri)
    epochs = client.get_metric_history(run.info.run_id, "epoch")
    assert [(m.step, m.value) for m in sorted(epochs, key=lambda m: m.step)] == [(1, 1), (2, 2)]
    assert "test_rmse" in run.data.metrics


def test_no_run_is_left_running(faulty) -> None:
    root, result, _, _ = faulty
    client = MlflowClient(result.tracking_uri)
    statuses = [r.info.status for r in client.search_runs([result.experiment_id])]
    assert "RUNNING" not in statuses and len(statuses) == len(FAULTS) + 1
    fired = sum(1 for _ in (root / "fault-state").iterdir())
    record_figures("1/4/5-trial-faults", faults_injected=fired, trials=len(FAULTS),
                   trials_finished=statuses.count("FINISHED") - 1, trials_failed_as_designed=statuses.count("FAILED"),
                   runs_lost=len(FAULTS) + 1 - len(statuses) + statuses.count("RUNNING"))


def test_no_planted_secret_in_any_artefact(faulty) -> None:
    root, result, session, runtime_env = faulty
    assert SECRET not in runtime_env and "CHEMTUNE_API_TOKEN" not in runtime_env
    client = MlflowClient(result.tracking_uri)
    for run in client.search_runs([result.experiment_id]):
        assert SECRET not in json.dumps({**run.data.params, **run.data.tags})
    scanned = 0
    for folder in (root, session):  # MLflow's db and artifacts (data_report.json, study.yaml), Tune storage, logs
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                scanned += 1
                assert SECRET.encode() not in path.read_bytes(), f"the planted secret leaked into {path}"
    assert scanned > 20


def test_concurrent_register_gives_distinct_versions_and_the_alias_ends_on_the_best(faulty) -> None:
    root, result, _, _ = faulty
    from concurrent.futures import ThreadPoolExecutor

    from studies.cli import main as cli

    register = ["register", "faulty", "--root", str(root), "--model-name", "race", "--force"]
    with ThreadPoolExecutor(2) as pool:  # two registrations racing on one store (separate connections)
        codes = list(pool.map(lambda _: cli(register), range(2)))
    assert codes == [0, 0]
    client = MlflowClient(result.tracking_uri)
    versions = client.search_model_versions("name = 'race'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    best = leaderboard("faulty", result.tracking_uri).iloc[0]
    assert best["state"] == "complete"
    assert client.get_model_version_by_alias("race", "champion").run_id == best["run_id"]
