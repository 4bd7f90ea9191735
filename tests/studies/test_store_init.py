"""Drivers started at once on a fresh embedded store: one creates MLflow's and Optuna's SQLite tables, the
others wait for it (seen in the fault suite: "table logged_models already exists" killed one of two launches)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from studies.store import StudyPaths


def _open_both(args: tuple[str, str, object]) -> str:
    mlflow_uri, optuna_url, barrier = args
    from studies.optuna_heartbeat import heartbeat_storage
    from studies.store import tracking_client

    barrier.wait()  # all at once, on a store none has created yet
    try:
        client = tracking_client(mlflow_uri)
        client.search_experiments()
        heartbeat_storage(optuna_url, max_retry=1).get_all_studies()
    except Exception as err:  # noqa: BLE001 - reported to the test
        return repr(err)
    return "ok"


def test_four_drivers_create_one_fresh_store_at_once(tmp_path: Path) -> None:
    paths = StudyPaths.default(tmp_path / "store")
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(4)
        with ctx.Pool(4) as pool:
            outcomes = pool.map(_open_both, [(paths.mlflow_uri, paths.optuna_url, barrier)] * 4)
    assert outcomes == ["ok"] * 4
    assert (tmp_path / "store" / "mlflow.db").is_file() and (tmp_path / "store" / "optuna.db").is_file()
