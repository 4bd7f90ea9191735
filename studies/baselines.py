"""Peer baselines as MLflow runs of a study: fitted once, on the payload every trial gets.

Each baseline is a child run of the study run tagged ``chemtune.role=baseline``, with the study's
split hashes, so ``chemtune leaderboard`` shows it as a labelled row beside the trials.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from mlflow.tracking import MlflowClient

from studies.store import PARENT_TAG as _PARENT, TAG_ROLE, TAG_STUDY

if TYPE_CHECKING:
    from studies.spec import StudySpec
    from trainables.base import Prepared

__all__ = ["fit_baselines", "TAG_BASELINE"]

TAG_BASELINE = "chemtune.baseline"


def _done(client: MlflowClient, experiment_id: str, parent_run_id: str) -> set[str]:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{_PARENT}` = '{parent_run_id}' and tags.`{TAG_ROLE}` = 'baseline' "
                      "and attributes.status = 'FINISHED'",
    )
    return {r.data.tags.get(TAG_BASELINE, "") for r in runs}


def fit_baselines(spec: "StudySpec", prepared: "Prepared", tracking_uri: str, experiment_id: str,
                  parent_run_id: str, log=print) -> dict[str, dict[str, float]]:  # noqa: ANN001 - a print-like
    """Fit the study's baselines not yet finished (a resumed study skips them); return their metrics.

    A baseline that crashes ends as a FAILED run with the error as a tag (never RUNNING), and the
    study goes on: the trials do not depend on it.
    """
    from trainables.baselines import BASELINES

    client = MlflowClient(tracking_uri)
    done = _done(client, experiment_id, parent_run_id)
    out: dict[str, dict[str, float]] = {}
    for name in spec.baselines.enabled(spec.task):
        if name in done:
            continue
        run = client.create_run(
            experiment_id, run_name=f"baseline-{name}",
            tags={_PARENT: parent_run_id, TAG_ROLE: "baseline", TAG_BASELINE: name, TAG_STUDY: spec.name,
                  "chemtune.method": name, "chemtune.task": spec.task, **prepared.tags},
        )
        run_id = run.info.run_id
        try:
            kwargs = ({"max_epochs": spec.baselines.chemprop_epochs} if name == "chemprop" else
                      {"n_estimators": spec.baselines.random_forest_trees,
                       "n_jobs": max(1, int(spec.resources.cpus_per_trial))})
            log(f"baseline {name}: fitting on the study's splits ...")
            result = BASELINES.get(name)(prepared.payload, spec.seed, **kwargs)
            for key, value in result.params.items():
                client.log_param(run_id, key, str(value)[:500])
            for key, value in result.metrics.items():
                client.log_metric(run_id, key, value)
            client.log_metric(run_id, "fit_s", result.wall_s)
            with tempfile.TemporaryDirectory() as tmp:
                for split, pred in result.predictions.items():
                    table = getattr(prepared.payload, split)
                    path = Path(tmp) / f"{split}_predictions.csv"
                    pd.DataFrame({"id": table.ids, "smiles": table.smiles, "target": table.targets,
                                  "prediction": pred}).to_csv(path, index=False)
                    client.log_artifact(run_id, str(path))
        except BaseException as err:
            client.set_tag(run_id, "chemtune.error", repr(err)[:500])
            client.set_terminated(run_id, "FAILED" if isinstance(err, Exception) else "KILLED")
            if not isinstance(err, Exception):
                raise
            log(f"baseline {name} failed: {err!r}")
            continue
        client.set_terminated(run_id, "FINISHED")
        out[name] = result.metrics
        log(f"baseline {name}: valid_rmse {result.metrics['valid_rmse']:.3f}, test_rmse {result.metrics['test_rmse']:.3f} "
            f"({result.wall_s:.0f} s)")
    return out
