"""Seed repeats: the best configuration re-trained with S other seeds after the search.

A study's best trial is one draw; its mean +/- std over seeds says whether a gain over another
configuration (or a baseline row) is real or noise. The repeats run as Ray tasks with the trial's
resources; their per-seed rows (``seed_repeats.csv``) and ``seeds_<metric>_mean`` / ``_std`` land
on the study run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from mlflow.tracking import MlflowClient

if TYPE_CHECKING:
    from studies.spec import StudySpec
    from trainables.base import Prepared

__all__ = ["repeat_best", "seed_summary"]


def _train(config: dict[str, Any], payload: Any, spec: "StudySpec") -> dict[str, float]:
    import torch

    from trainables import TASKS, NullReporter

    torch.set_num_threads(max(1, int(spec.resources.cpus_per_trial)))
    final = TASKS.get(spec.task).train(config, payload, spec.trial_spec(), NullReporter())
    return {k: float(v) for k, v in final.items() if k.startswith(("valid_", "test_"))}


def seed_summary(rows: pd.DataFrame) -> dict[str, float]:
    """``seeds_<metric>_mean`` and ``_std`` (sample std, ddof=1) of every valid/test column."""
    out: dict[str, float] = {"seeds_n": float(len(rows))}
    for column in rows.columns:
        if column.startswith(("valid_", "test_")):
            out[f"seeds_{column}_mean"] = float(rows[column].mean())
            out[f"seeds_{column}_std"] = float(rows[column].std(ddof=1)) if len(rows) > 1 else 0.0
    return out


def repeat_best(spec: "StudySpec", prepared: "Prepared", best_config: dict[str, Any], tracking_uri: str,
                parent_run_id: str) -> pd.DataFrame:
    """Train ``best_config`` with seeds ``spec.seed + 1 .. spec.seed + S``; log rows and mean/std on the study run."""
    import ray

    task = ray.remote(num_cpus=spec.resources.cpus_per_trial, num_gpus=spec.resources.gpus_per_trial)(_train)
    payload = ray.put(prepared.payload)
    seeds = [spec.seed + i for i in range(1, spec.seed_repeats + 1)]
    futures = [task.remote(dict(best_config), payload, spec.model_copy(update={"seed": s})) for s in seeds]
    rows = pd.DataFrame([{"seed": s, **m} for s, m in zip(seeds, ray.get(futures))])
    client = MlflowClient(tracking_uri)
    for key, value in seed_summary(rows).items():
        client.log_metric(parent_run_id, key, value)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seed_repeats.csv"
        rows.to_csv(path, index=False)
        client.log_artifact(parent_run_id, str(path))
    return rows
