"""Per-trial resources: CPUs and (fractional) GPUs for each trial, and how many trials run at once."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainables.spec import ResourcesSpec

__all__ = ["trial_resources", "with_trial_resources", "max_concurrent", "limit_search"]


def trial_resources(spec: "ResourcesSpec") -> dict[str, float]:
    """Ray resource request of one trial (one worker)."""
    return {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial}


def with_trial_resources(trainable: Callable[..., Any], spec: "ResourcesSpec") -> Any:
    """Attach the study's per-trial resources to a Tune function trainable."""
    from ray import tune

    if spec.num_workers > 1:
        from cluster.distributed import distributed_trainable  # Ray Train: several workers per trial

        return distributed_trainable(trainable, spec)
    return tune.with_resources(trainable, trial_resources(spec))


def max_concurrent(spec: "ResourcesSpec", cluster: dict[str, float]) -> int:
    """Trials that fit ``cluster`` at once, capped by ``max_concurrent_trials`` (the guide's arithmetic).

    The runner does not cap by this: Ray Tune queues trials against the cluster's free resources (never
    oversubscribing), and on an autoscaling cluster the queued trials are what makes it add nodes.
    """
    fits = [cluster.get("CPU", 0.0) / (spec.cpus_per_trial * spec.num_workers)]
    if spec.gpus_per_trial > 0:
        fits.append(cluster.get("GPU", 0.0) / (spec.gpus_per_trial * spec.num_workers))
    n = max(1, math.floor(min(fits) + 1e-9))
    return min(n, spec.max_concurrent_trials) if spec.max_concurrent_trials else n


def limit_search(searcher: Any, spec: "ResourcesSpec") -> Any:
    """The searcher, limited where Ray Tune's own queueing cannot limit it.

    A one-worker trial reserves its CPUs/GPUs, so Tune queues trials against the cluster as it is *now*
    (and on an autoscaling cluster the queued requests are what makes it add nodes): no limit needed.
    A multi-worker trial's Tune driver reserves nothing (its Ray Train workers do), so every trial would
    start at once; there the limit is what fits the cluster, re-read as nodes join (at least one trial, whose
    pending workers make an autoscaler add a node). ``max_concurrent_trials`` is passed to Tune directly.
    """
    if spec.num_workers == 1 or spec.max_concurrent_trials:
        return searcher
    from ray.tune.search import ConcurrencyLimiter

    class _ClusterLimiter(ConcurrencyLimiter):
        _checked = 0.0

        def suggest(self, trial_id: str) -> Any:
            if time.monotonic() - self._checked > 5:  # Tune asks often; the GCS is asked every 5 s at most
                import ray

                self.max_concurrent = max_concurrent(spec, ray.cluster_resources())
                self._checked = time.monotonic()
            return super().suggest(trial_id)

    return _ClusterLimiter(searcher, max_concurrent=1)
