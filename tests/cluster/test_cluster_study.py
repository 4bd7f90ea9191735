"""Studies on a real multi-node Ray cluster, tracked on an MLflow server backed by PostgreSQL (with basic auth)."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
from support.local_cluster import LocalMlflowServer, LocalPostgres, LocalRayCluster

from studies.spec import parse_study

pytestmark = pytest.mark.slow
TRIALS = 2  # two at once on two 1-CPU workers: one on each (a second round of two added ~a minute, no check)


def _trial_actors(cluster: LocalRayCluster) -> dict[str, dict[str, Any]]:
    """Every Tune function-trainable actor the cluster ran (alive or dead), by actor id."""
    from ray.util.state import list_actors

    actors = list_actors(address=cluster.dashboard_url, filters=[("class_name", "=", "ImplicitFunc")],
                         limit=10_000, timeout=30)
    return {a.actor_id: {"node_id": a.node_id, "state": a.state} for a in actors}


@pytest.fixture(scope="module")
def cluster_study(on_cluster: LocalRayCluster, study_dict: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One 2-trial study on the two-worker cluster (launched once for the tests below)."""
    from studies.runner import launch

    root = tmp_path_factory.mktemp("cluster-study")
    spec = parse_study(study_dict("cluster-4", root / "tune", num_trials=TRIALS))
    before = set(_trial_actors(on_cluster))
    result = launch(spec, address=on_cluster.address, root=root / "home")
    actors = {k: v for k, v in _trial_actors(on_cluster).items() if k not in before}
    return {"spec": spec, "result": result, "actors": actors, "root": root}


def test_server_refuses_requests_without_credentials(mlflow_server: LocalMlflowServer) -> None:
    url = f"{mlflow_server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, timeout=30)
    assert err.value.code in (401, 403)
    wrong = base64.b64encode(f"{mlflow_server.admin_username}:not-the-password".encode()).decode()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Basic {wrong}"}), timeout=30)
    assert err.value.code in (401, 403)
    good = base64.b64encode(f"{mlflow_server.admin_username}:{mlflow_server.admin_password}".encode()).decode()
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Basic {good}"}),
                                timeout=30) as r:
        assert r.status == 200


def test_client_without_credentials_cannot_log(mlflow_server: LocalMlflowServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    client = mlflow.MlflowClient(mlflow_server.url)
    with pytest.raises(mlflow.exceptions.MlflowException, match="401|403|[Uu]nauthori[sz]ed|[Pp]ermission"):
        client.create_experiment("no-credentials")


def test_wrong_user_cannot_write_to_the_admins_experiment(mlflow_server: LocalMlflowServer,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Scenario 9: a second, non-admin user (created through the auth API) is authenticated (it may read,
    the server's default permission) but refused (403) a write to an experiment it was not granted."""
    from mlflow.server.auth.client import AuthServiceClient

    for key, value in mlflow_server.credentials.items():
        monkeypatch.setenv(key, value)
    user, password = "reader-7c1", "Reader-pass-9d2e"
    AuthServiceClient(mlflow_server.url).create_user(user, password)
    experiment_id = mlflow.MlflowClient(mlflow_server.url).create_experiment("admins-own")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    client = mlflow.MlflowClient(mlflow_server.url)
    assert client.get_experiment(experiment_id).name == "admins-own"  # authenticated: reading is allowed
    with pytest.raises(mlflow.exceptions.MlflowException, match="PERMISSION_DENIED|403|[Pp]ermission") as err:
        client.create_run(experiment_id)
    assert err.value.get_http_status_code() == 403
    assert not mlflow.MlflowClient(mlflow_server.url).search_runs([experiment_id])  # nothing was written
    body = json.dumps({"experiment_id": experiment_id}).encode()
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(f"{mlflow_server.url}/api/2.0/mlflow/runs/create", data=body, method="POST",
                                     headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(request, timeout=30)
    assert http.value.code == 403


def test_study_runs_across_both_worker_nodes(cluster_study: dict[str, Any], on_cluster: LocalRayCluster) -> None:
    result = cluster_study["result"]
    assert result.num_errors == 0
    assert len(result.leaderboard) == TRIALS
    actors = cluster_study["actors"]
    assert len(actors) >= 2  # trial actors; Tune reuses an actor for the next trial on its node
    workers = {n["node_id"] for n in on_cluster.alive_nodes() if not n["is_head_node"]}
    used = {a["node_id"] for a in actors.values()}
    assert used == workers and len(used) == 2  # both workers ran trials, the 0-CPU head none


def test_parent_and_child_runs_on_the_server(cluster_study: dict[str, Any], mlflow_server: LocalMlflowServer,
                                             postgres: LocalPostgres) -> None:
    import sqlalchemy

    result = cluster_study["result"]
    assert result.tracking_uri == mlflow_server.url
    client = mlflow.MlflowClient(mlflow_server.url)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    children = client.search_runs([result.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert len(children) == TRIALS
    assert all("valid_rmse" in c.data.metrics and "test_rmse" in c.data.metrics for c in children)
    # The runs live in PostgreSQL, not in a file store beside the server.
    engine = sqlalchemy.create_engine(postgres.url("mlflow"))
    with engine.connect() as conn:
        n = conn.execute(sqlalchemy.text("SELECT count(*) FROM runs WHERE experiment_id = :e"),
                         {"e": int(result.experiment_id)}).scalar()
    engine.dispose()
    assert n == TRIALS + 1


def test_optuna_study_lives_in_postgres(cluster_study: dict[str, Any], postgres: LocalPostgres) -> None:
    study = optuna.load_study(study_name="cluster-4", storage=postgres.url("optuna"))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == TRIALS
    board = cluster_study["result"].leaderboard
    assert min(t.value for t in done) == pytest.approx(board["valid_rmse"].min(), rel=1e-6)


def test_leaderboard_and_register_against_the_server(cluster_study: dict[str, Any], mlflow_server: LocalMlflowServer,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from studies.cli import main

    home = str(cluster_study["root"] / "home")
    assert main(["leaderboard", "cluster-4", "--tracking-uri", mlflow_server.url, "--format", "json",
                 "--root", home]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == TRIALS
    assert [r["valid_rmse"] for r in rows] == sorted(r["valid_rmse"] for r in rows)
    assert main(["register", "cluster-4", "--model-name", "cluster-logp", "--tracking-uri", mlflow_server.url,
                 "--root", home]) == 0
    version = mlflow.MlflowClient(mlflow_server.url).get_model_version_by_alias("cluster-logp", "champion")
    assert version.run_id == rows[0]["run_id"]


@pytest.mark.long  # ~120 s; CI checks multi-worker trial resources in test_resources.py
def test_two_worker_torchtrainer_trial(on_cluster: LocalRayCluster, mlflow_server: LocalMlflowServer,
                                       study_dict: Any, tmp_path: Path) -> None:
    """One trial on 2 Ray Train workers (one per node, gloo): it trains, reports every epoch, checkpoints."""
    from studies.runner import launch

    spec = parse_study(study_dict("cluster-ddp", tmp_path / "tune", num_trials=1,
                                  max_epochs=2, resources={"cpus_per_trial": 1, "num_workers": 2}))
    result = launch(spec, address=on_cluster.address, root=tmp_path / "home")
    assert result.num_errors == 0
    client = mlflow.MlflowClient(mlflow_server.url)
    (child,) = client.search_runs([result.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert child.data.metrics["train_world_size"] == 2
    history = client.get_metric_history(child.info.run_id, "valid_rmse")
    assert len(history) == 2  # one report per epoch, from rank 0 only
    assert child.data.metrics["test_rmse"] > 0
    assert result.leaderboard["model_uri"].iloc[0]  # rank 0's checkpoint reached MLflow as a model


def test_gpu_fractions_pack_without_oversubscribing(on_cluster: LocalRayCluster, tmp_path: Path) -> None:
    """Trials asking 0.25 GPU pack four to a logical GPU; never more than fit run at once."""
    import ray
    from ray import tune

    from cluster.resources import max_concurrent, with_trial_resources
    from studies.spec import ResourcesSpec

    def trial(config: dict[str, Any]) -> None:
        start = time.time()
        time.sleep(8)
        tune.report({"start": start, "end": time.time(), "node": ray.get_runtime_context().get_node_id(),
                     "gpu": ",".join(str(g) for g in ray.get_gpu_ids())})

    spec = ResourcesSpec(cpus_per_trial=0.25, gpus_per_trial=0.25)
    limit = max_concurrent(spec, ray.cluster_resources())
    assert limit == 8  # 2 CPUs / 0.25 and 2 GPUs / 0.25
    results = tune.Tuner(
        with_trial_resources(trial, spec),
        param_space={"i": tune.grid_search(list(range(8)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=limit),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="pack", verbose=0),
    ).fit()
    frame = results.get_dataframe()
    assert len(frame) == 8 and results.num_errors == 0
    rows = frame[["start", "end", "node", "gpu"]].to_dict("records")

    def overlapping(at: float, group: list[dict[str, Any]]) -> int:
        return sum(r["start"] <= at < r["end"] for r in group)

    for node in {r["node"] for r in rows}:
        group = [r for r in rows if r["node"] == node]
        assert {r["gpu"] for r in group} == {"0"}  # one logical GPU per node, shared
        peak = max(overlapping(r["start"], group) for r in group)
        assert peak <= 4  # 4 x 0.25 fills the GPU: never a fifth
    peak = max(overlapping(r["start"], [x for x in rows if x["node"] == r["node"]]) for r in rows)
    assert peak >= 2  # fractions really shared one GPU at the same time
