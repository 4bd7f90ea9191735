"""Real cluster components for the cluster tests, one of each per session (loopback only).

* ``postgres``: a throwaway PostgreSQL (``initdb``/``pg_ctl`` in a temp folder; as root it runs as ``postgres``).
* ``mlflow_server``: ``mlflow server`` on that PostgreSQL with ``--serve-artifacts`` and the basic-auth app.
* ``ray_cluster``: a head (0 CPUs) and two worker nodes (1 CPU, 1 logical GPU each) as ``ray start`` processes.
* ``on_cluster``: this test process connected to ``ray_cluster`` as a Ray driver, with MLflow credentials set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.local_cluster import LocalMlflowServer, LocalPostgres, LocalRayCluster, NodeSpec

REPO = Path(__file__).resolve().parents[2]


def _need(program: str) -> None:
    from support.local_cluster import _pg_bin

    try:
        _pg_bin(program)
    except FileNotFoundError as err:
        pytest.fail(f"the cluster tests need PostgreSQL's server programs: {err}")


@pytest.fixture(scope="package")  # torn down after tests/cluster: no idle cluster beside the other packages
def postgres() -> Iterator[LocalPostgres]:
    _need("initdb")
    with LocalPostgres(databases=("mlflow", "mlflow_auth", "optuna")) as pg:
        yield pg


@pytest.fixture(scope="package")  # torn down after tests/cluster: no idle cluster beside the other packages
def mlflow_server(postgres: LocalPostgres) -> Iterator[LocalMlflowServer]:
    with LocalMlflowServer(postgres.url("mlflow"), auth_database_uri=postgres.url("mlflow_auth")) as server:
        yield server


@pytest.fixture(scope="package")  # torn down after tests/cluster: no idle cluster beside the other packages
def ray_cluster(mlflow_server: LocalMlflowServer) -> Iterator[LocalRayCluster]:
    # The nodes get the MLflow credentials the way a real cluster gets them from a secret: in their
    # environment, so job drivers can log without the job's runtime environment carrying them.
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1", **mlflow_server.credentials}
    workers = [NodeSpec(num_cpus=1, num_gpus=1, resources={"node-a": 1}),
               NodeSpec(num_cpus=1, num_gpus=1, resources={"node-b": 1})]
    with LocalRayCluster(workers, head=NodeSpec(num_cpus=0), env=env) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def on_cluster(ray_cluster: LocalRayCluster, mlflow_server: LocalMlflowServer) -> Iterator[LocalRayCluster]:
    """This process as a driver of ``ray_cluster`` (not of a local Ray another test module started)."""
    import ray

    ray.shutdown()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in mlflow_server.credentials.items():
            mp.setenv(key, value)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        ray.init(address=ray_cluster.address, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": ray_cluster.env["PYTHONPATH"]}})
        try:
            yield ray_cluster
        finally:
            ray.shutdown()


def _study_dict(name: str, mlflow_server: LocalMlflowServer, postgres: LocalPostgres, storage: Path,
                **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name, "task": "property", "search_space": "property",
        "dataset": {"name": "nci-logp", "limit": 120, "split": "random", "seed": 0},
        "model": {"name": "tiny-bert", "max_length": 32},
        "fixed": {"method": "bitfit", "batch_size": 32},
        "ranges": {"lr": [0.0005, 0.003]},
        "num_trials": 2, "max_epochs": 1, "seed": 0, "metric": "valid_rmse",
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
        "baselines": {"random_forest": False},  # scheduling tests: trials only (test_guide keeps the baseline row)
        "tracking": {"tracking_uri": mlflow_server.url, "optuna_storage": postgres.url("optuna"),
                     "storage_path": str(storage)},
    }
    data.update(overrides)
    return data


@pytest.fixture(scope="package")  # torn down after tests/cluster: no idle cluster beside the other packages
def study_dict(mlflow_server: LocalMlflowServer, postgres: LocalPostgres) -> Any:
    """``(name, storage, **overrides) -> dict``: a tiny nci-logp study tracked on the server, Optuna in PostgreSQL."""
    return lambda name, storage, **overrides: _study_dict(name, mlflow_server, postgres, storage, **overrides)
