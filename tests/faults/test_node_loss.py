"""Scenario 1 on a multi-node cluster: the worker node that runs a trial is removed mid-trial (the whole node
SIGKILLed, as a pre-empted machine); the trial resumes from its last checkpoint on the node that is left."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pytest

from studies.spec import parse_study
from tests.conftest import ROOT, tiny_study
from tests.faults.conftest import record_figures
from tests.support.background import StudyThread
from tests.support.local_cluster import LocalRayCluster, NodeSpec, wait_for
from trainables.faults import FAULTS_ENV, STATE_ENV

pytestmark = pytest.mark.slow
MAX_EPOCHS = 3


def _tune_results(storage: Path) -> dict[str, list[dict[str, Any]]]:
    """Per Tune trial id, the results its processes reported, in order (Tune's own record, beside MLflow's)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in storage.rglob("result.json"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            out.setdefault(row["trial_id"], []).append(row)
    return out


@pytest.mark.long  # ~100-200 s; CI runs scenario 1 by SIGKILL in tests/faults/test_trial_faults.py
def test_trial_on_a_removed_worker_node_resumes_from_its_checkpoint(tmp_path: Path, shared_data: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    ray.shutdown()  # this process becomes a driver of the cluster below, not of another module's Ray
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("CHEMTUNE_DATA_DIR", str(shared_data))
    # Every epoch straggles 4 s, so a trial is caught between its first and last epoch on any CPU.
    monkeypatch.setenv(FAULTS_ENV, json.dumps([{"kind": "slow", "epoch": "any", "seconds": 4, "times": 1000}]))
    monkeypatch.setenv(STATE_ENV, str(tmp_path / "faults"))
    spec = parse_study(tiny_study(
        name="node-loss", num_trials=2, max_epochs=MAX_EPOCHS, max_failures=1, dataset={"limit": 160},
        model={"max_length": 32}, fixed={"method": "bitfit", "batch_size": 32}, scheduler={"grace_period": MAX_EPOCHS},
        tracking={"storage_path": str(tmp_path / "tune")},
    ))
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # a 0-CPU head and two 1-CPU workers: each worker runs one of the two trials
    with LocalRayCluster([NodeSpec(num_cpus=1), NodeSpec(num_cpus=1)], head=NodeSpec(num_cpus=0), env=env) as cluster:
        study = StudyThread(spec, cluster.address, tmp_path / "home")
        try:
            def mid_trial() -> tuple[str, int] | None:  # a trial between its first and last epoch, and its node
                study.check()
                for trial_id, rows in _tune_results(tmp_path / "tune").items():
                    if 1 <= rows[-1]["epoch"] < MAX_EPOCHS and not rows[-1].get("done"):
                        node = cluster.worker_of(int(rows[-1]["pid"]))  # Tune reports the trial's process id
                        if node is not None:
                            return trial_id, node
                return None

            victim, node = wait_for(mid_trial, 600, "a trial between its first and last epoch")
            cluster.remove_worker(node)  # the node goes, its trial process with it
            study.thread.join(600)
        finally:
            ray.shutdown()
        assert not study.thread.is_alive(), "study still running 600 s after the node was removed"
    study.check()
    result = study.outcome["result"]
    assert result.num_errors == 0
    client = mlflow.MlflowClient(result.tracking_uri)
    runs = client.search_runs([result.experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"] * 3  # the study run and both trials: none RUNNING
    trials = [r for r in runs if r.data.tags.get("chemtune.role") == "trial"]
    recovered = [r for r in trials if r.data.tags.get("chemtune.recovered") == "true"]
    assert len(recovered) == 1, [r.data.tags for r in trials]  # the removed node's trial, retried once
    (moved,) = recovered
    assert moved.data.tags["chemtune.trial_id"] == victim and moved.data.tags["chemtune.failures"] == "1"
    assert moved.data.tags["chemtune.error_type"] != "UnknownError", moved.data.tags  # why it moved: the lost actor
    for run in trials:  # every epoch once, each the epoch it says (a restart from scratch would log epoch 1 at step 2)
        history = client.get_metric_history(run.info.run_id, "epoch")
        assert sorted((m.step, m.value) for m in history) == [(e, e) for e in range(1, MAX_EPOCHS + 1)]
        assert run.data.tags["chemtune.epochs"] == str(MAX_EPOCHS) and "test_rmse" in run.data.metrics
    # Tune's own record: the moved trial's processes reported each epoch once, so it went on from its
    # checkpoint on the other node instead of training again from epoch 1
    reported = _tune_results(tmp_path / "tune")[victim]
    assert [r["epoch"] for r in reported] == list(range(1, MAX_EPOCHS + 1))
    restored = [r for r in reported if r["iterations_since_restore"] == 1]
    assert len(restored) == 2 and restored[1]["epoch"] > 1  # its second process began after a checkpointed epoch
    record_figures("1-worker-node-removed", faults_injected=1, trials=2, trials_finished=len(trials),
                   runs_lost=0, recovered=len(recovered))


def test_an_error_not_yet_synced_to_storage_is_read_from_the_trial_folder(tmp_path: Path) -> None:
    """A lost node's trial fails before Tune syncs its error files to storage: the tag still names the error."""
    from types import SimpleNamespace

    import cloudpickle

    from studies.tracking import error_summary

    pickled, text = tmp_path / "error.pkl", tmp_path / "error.txt"
    unsynced = SimpleNamespace(get_pickled_error=lambda: None, get_error=lambda: None,
                               pickled_error_file=str(pickled), error_file=str(text))
    assert error_summary(unsynced) == ("UnknownError", "the trial failed without an error file")
    text.write_text("Failure # 1 (occurred at 2026-01-01_00-00-00)\nThe actor died unexpectedly\n")
    assert error_summary(unsynced) == ("RuntimeError", "The actor died unexpectedly")
    pickled.write_bytes(cloudpickle.dumps(ConnectionError("node 127.0.0.1 was lost")))
    assert error_summary(unsynced) == ("ConnectionError", "node 127.0.0.1 was lost")
