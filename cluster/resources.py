"""Per-trial resources: CPUs and (fractional) GPUs for each trial, and how many trials run at once."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainables.spec import ResourcesSpec

__all__ = ["trial_resources", "with_trial_resources", "max_concurrent"]


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
    """Trials that fit the cluster at once, capped by ``max_concurrent_trials``: never oversubscribe."""
    fits = [cluster.get("CPU", 0.0) / (spec.cpus_per_trial * spec.num_workers)]
    if spec.gpus_per_trial > 0:
        fits.append(cluster.get("GPU", 0.0) / (spec.gpus_per_trial * spec.num_workers))
    n = max(1, math.floor(min(fits) + 1e-9))
    return min(n, spec.max_concurrent_trials) if spec.max_concurrent_trials else n
