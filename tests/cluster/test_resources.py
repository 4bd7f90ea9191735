"""Per-trial resources: the concurrency cap never oversubscribes the cluster."""

from __future__ import annotations

import itertools

import pytest

from cluster.distributed import scaling_config
from cluster.resources import max_concurrent, trial_resources
from studies.spec import ResourcesSpec, parse_study


@pytest.mark.parametrize(
    ("cpus", "gpus", "workers", "cap"),
    list(itertools.product([0.5, 1, 3], [0, 0.25, 1, 2], [1, 2], [None, 1, 3])),
)
def test_max_concurrent_never_oversubscribes(cpus: float, gpus: float, workers: int, cap: int | None) -> None:
    spec = ResourcesSpec(cpus_per_trial=cpus, gpus_per_trial=gpus, num_workers=workers, max_concurrent_trials=cap)
    for cluster in ({"CPU": 8, "GPU": 2}, {"CPU": 16, "GPU": 4}, {"CPU": 4}, {"CPU": 32, "GPU": 8}):
        n = max_concurrent(spec, cluster)
        assert n >= 1
        if cap is not None:
            assert n <= cap
        fits = cpus * workers <= cluster["CPU"] and gpus * workers <= cluster.get("GPU", 0) + (gpus == 0) * 1e9
        if fits:  # all n trials fit at once, and one more would not (unless capped)
            assert n * cpus * workers <= cluster["CPU"] + 1e-9
            assert n * gpus * workers <= cluster.get("GPU", 0) + 1e-9
            more = (n + 1) * cpus * workers > cluster["CPU"] or (n + 1) * gpus * workers > cluster.get("GPU", 0)
            assert more or n == cap


def test_gpu_fractions_pack_four_to_a_gpu() -> None:
    spec = ResourcesSpec(cpus_per_trial=1, gpus_per_trial=0.25)
    assert max_concurrent(spec, {"CPU": 16, "GPU": 1}) == 4
    assert max_concurrent(spec, {"CPU": 2, "GPU": 1}) == 2  # CPUs bind first
    assert trial_resources(spec) == {"cpu": 1, "gpu": 0.25}


def test_multi_worker_trials_scale_per_worker() -> None:
    spec = ResourcesSpec(cpus_per_trial=4, gpus_per_trial=1, num_workers=2)
    scaling = scaling_config(spec)
    assert scaling.num_workers == 2 and scaling.use_gpu
    assert scaling.resources_per_worker == {"CPU": 4, "GPU": 1}
    assert max_concurrent(spec, {"CPU": 32, "GPU": 4}) == 2  # 2 trials x 2 workers fill 4 GPUs
    cpu_only = scaling_config(ResourcesSpec(cpus_per_trial=1, num_workers=2))
    assert not cpu_only.use_gpu and cpu_only.resources_per_worker == {"CPU": 1}


def test_multi_worker_limit_follows_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Multi-worker trials reserve nothing in Tune: their limit is re-counted from the nodes present."""
    import ray
    from ray.tune.search import Searcher

    from cluster import resources

    class Proposals(Searcher):
        def suggest(self, trial_id: str) -> dict:
            return {"lr": 0.001}

    searcher = Proposals(metric="valid_rmse", mode="min")
    assert resources.limit_search(searcher, ResourcesSpec(cpus_per_trial=1)) is searcher  # Tune queues these
    assert resources.limit_search(searcher, ResourcesSpec(num_workers=2, max_concurrent_trials=3)) is searcher
    cluster = {"CPU": 0.0}  # an autoscaling cluster before its first worker
    monkeypatch.setattr(ray, "cluster_resources", lambda: dict(cluster))
    clock = [0.0]
    monkeypatch.setattr(resources.time, "monotonic", lambda: clock[0])
    limited = resources.limit_search(searcher, ResourcesSpec(cpus_per_trial=2, num_workers=2))
    clock[0] = 10.0
    assert limited.suggest("t1") is not None  # one trial, whose pending workers make the autoscaler add a node
    assert limited.suggest("t2") is None
    cluster["CPU"] = 16.0  # two 8-CPU nodes joined: 4 trials of 2 x 2 CPUs fit
    clock[0] = 20.0
    assert [limited.suggest(f"t{i}") is not None for i in range(3, 7)] == [True, True, True, False]


@pytest.mark.parametrize(("given", "workers", "embedded", "expected"), [
    (None, 1, True, True),    # embedded local Ray: its resources never change, reuse saves a torch import per trial
    (None, 1, False, False),  # a cluster: a reused actor would take the queued trial from a node that just joined
    (True, 1, False, True), (False, 1, True, False),  # the study's choice wins
    (None, 2, True, False),   # Ray Train trials start their own workers
])
def test_actor_reuse_follows_the_cluster_unless_the_study_says(given, workers, embedded, expected) -> None:
    from studies.runner import _reuse_actors
    from tests.conftest import tiny_study

    spec = parse_study(tiny_study(resources={"num_workers": workers, **({} if given is None else {"reuse_actors": given})}))
    assert _reuse_actors(spec, embedded) is expected


def test_reuse_actors_with_ray_train_workers_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match="reuse_actors"):
        ResourcesSpec(num_workers=2, reuse_actors=True)
