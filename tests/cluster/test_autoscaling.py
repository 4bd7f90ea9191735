"""Trial concurrency follows the cluster: a worker node joining mid-study runs trials at once with the first.

The cluster starts as the shipped configs do (a 0-CPU head and one small worker); the study sets no
``max_concurrent_trials``. Before the fix, the cap was computed once at launch from the resources present
then (one CPU: one trial at a time), so a node added later (by an autoscaler, here by hand) sat idle.
After that fix it still sat idle: Tune's actor reuse handed each queued trial to the process of the trial
that had just finished, removing the actor starting on the new node (``studies.runner._reuse_actors``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import pytest
from support.background import StudyThread
from support.local_cluster import LocalRayCluster, NodeSpec, wait_for

from studies.spec import parse_study
from tests.conftest import tiny_study

pytestmark = pytest.mark.slow


def _peak(intervals: list[tuple[float, float]], after: float = 0.0) -> int:
    """Most intervals open at once, counting only moments at or after ``after``."""
    moments = [max(s, after) for s, e in intervals if e > after]
    return max((sum(s <= t < e for s, e in intervals) for t in moments), default=0)


@pytest.mark.long  # ~150 s; the unit test of the choice that caused it (actor reuse) always runs
def test_concurrency_rises_when_a_node_joins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import ray

    ray.shutdown()  # not a driver of another module's cluster
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    repo = str(Path(__file__).resolve().parents[2])
    env = {"PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p), "OMP_NUM_THREADS": "1"}
    spec = parse_study(tiny_study(name="grow", num_trials=8, max_epochs=2, dataset={"limit": 200},
                                  model={"max_length": 32}, fixed={"method": "bitfit", "batch_size": 32},
                                  scheduler={"grace_period": 2}, resources={"cpus_per_trial": 1}))
    assert spec.resources.max_concurrent_trials is None
    # Each epoch straggles 2 s (an injected ``slow`` fault), so the 7 trials left when the node joins take
    # ~30 s on one node: longer than a new node needs to start a trial actor, however fast the CPU is.
    monkeypatch.setenv("CHEMTUNE_FAULTS", json.dumps([{"kind": "slow", "epoch": "any", "seconds": 2, "times": 1000}]))
    monkeypatch.setenv("CHEMTUNE_FAULTS_STATE", str(tmp_path / "faults"))
    with LocalRayCluster([NodeSpec(num_cpus=1)], head=NodeSpec(num_cpus=0), env=env) as cluster:
        study = StudyThread(spec, cluster.address, tmp_path / "home")
        try:
            uri = f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"

            def first_trial_done() -> bool:
                study.check()
                client = mlflow.MlflowClient(uri)
                experiment = client.get_experiment_by_name("grow")
                runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
                return any("mlflow.parentRunId" in r.data.tags for r in runs)

            wait_for(first_trial_done, 600, "the first trial on one worker")
            cluster.add_worker(NodeSpec(num_cpus=1))  # what an autoscaler does when trials queue
            joined = time.time()
            study.thread.join(900)
        finally:
            ray.shutdown()
        assert not study.thread.is_alive(), "study still running after 900 s"
    study.check()
    result = study.outcome["result"]
    assert result.num_errors == 0 and len(result.leaderboard) == 8
    client = mlflow.MlflowClient(result.tracking_uri)
    children = client.search_runs([result.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    intervals = [(r.info.start_time / 1000, r.info.end_time / 1000) for r in children]
    assert _peak([i for i in intervals if i[0] < joined]) == 1  # one CPU: one trial at a time
    assert _peak(intervals, after=joined) == 2  # the new node's CPU ran a trial beside the first node's
