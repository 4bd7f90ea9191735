"""Peer baselines as MLflow runs of a study: fitted once, on the payload every trial gets, beside the trials.

Each baseline is a child run of the study run tagged ``chemtune.role=baseline``, with the study's
split hashes, so ``chemtune leaderboard`` shows it as a labelled row beside the trials.

Why a Ray task and not the driver: fitted in the driver, the baselines held every trial back (on 2 CPU cores
a random forest and chemprop took ~15 min before trial 1, with one core idle; on a GPU cluster the GPUs
waited for CPU fits). A :class:`BaselineJob` fits them one after another in a Ray task that takes one
trial's CPUs, so the trials start at once and Tune schedules around it; the driver logs each result as it
arrives (:class:`BaselineCallback`) and waits for the rest when the trials are done.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd
from mlflow.tracking import MlflowClient
from ray import tune

from studies.health import TAG_END_REASON
from studies.store import PARENT_TAG as _PARENT, TAG_ROLE, TAG_STUDY

if TYPE_CHECKING:
    from studies.spec import StudySpec
    from trainables.base import Prepared

__all__ = ["BaselineJob", "BaselineCallback", "baseline_kwargs", "fit_baselines", "TAG_BASELINE"]

TAG_BASELINE = "chemtune.baseline"


def _done(client: MlflowClient, experiment_id: str, parent_run_id: str) -> set[str]:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{_PARENT}` = '{parent_run_id}' and tags.`{TAG_ROLE}` = 'baseline' "
                      "and attributes.status = 'FINISHED'",
    )
    return {r.data.tags.get(TAG_BASELINE, "") for r in runs}


def baseline_kwargs(spec: "StudySpec", name: str) -> dict[str, Any]:
    """The study's settings of baseline ``name`` (the keyword arguments of its ``BASELINES`` entry)."""
    if name == "chemprop":
        return {"max_epochs": spec.baselines.chemprop_epochs}
    from trainables.data.datasets import DATASETS

    return {"n_estimators": spec.baselines.random_forest_trees, "n_jobs": max(1, int(spec.resources.cpus_per_trial)),
            # a computed label (nci-logp: Crippen logP) must not be among the forest's features
            "exclude_descriptors": DATASETS.get(spec.dataset.name).label_descriptors}


def _fit_one(name: str, payload: Any, seed: int, kwargs: dict[str, Any]) -> Any:
    """One baseline's fit (the body of the Ray task): a ``trainables.property.baselines.BaselineResult``."""
    from trainables.faults import inject
    from trainables.property.baselines import BASELINES

    inject("baseline", {"baseline": name}, 1)  # the fault suite's hook (a no-op unless CHEMTUNE_FAULTS is set)
    return BASELINES.get(name)(payload, seed, **kwargs)


class BaselineJob:
    """The study's unfinished baselines, fitted one at a time; each result logged to its run as it comes.

    Args:
        spec, prepared: The study and the payload its trials get (the identical split).
        tracking_uri, experiment_id, parent_run_id: The study's MLflow run.
        log: A print-like function for the one-line messages.
        remote: Fit in a Ray task (``num_cpus`` = the study's ``cpus_per_trial``) beside the trials;
            ``False`` fits in this process, synchronously (:func:`fit_baselines`).

    A baseline that crashes ends as a FAILED run with the error as a tag, and the study goes on: the trials
    do not depend on it. One cut short (:meth:`cancel`) ends KILLED with the reason; a resumed study fits
    again every baseline not FINISHED.
    """

    def __init__(self, spec: "StudySpec", prepared: "Prepared", tracking_uri: str, experiment_id: str,
                 parent_run_id: str, log: Callable[[str], Any] = print, remote: bool = True) -> None:
        self.spec, self.prepared, self.log, self.remote = spec, prepared, log, remote
        self.experiment_id, self.parent_run_id = experiment_id, parent_run_id
        self.client = MlflowClient(tracking_uri)
        done = _done(self.client, experiment_id, parent_run_id)
        self.queue = [name for name in spec.baselines.enabled(spec.task) if name not in done]
        self.metrics: dict[str, dict[str, float]] = {}
        self._current: tuple[str, str, Any] | None = None  # (name, run id, ObjectRef or the local result)

    @property
    def pending(self) -> bool:
        return self._current is not None or bool(self.queue)

    def _submit(self) -> None:
        name = self.queue.pop(0)
        tags = {_PARENT: self.parent_run_id, TAG_ROLE: "baseline", TAG_BASELINE: name, TAG_STUDY: self.spec.name,
                "chemtune.method": name, "chemtune.task": self.spec.task, **self.prepared.tags}
        run_id = self.client.create_run(self.experiment_id, run_name=f"baseline-{name}", tags=tags).info.run_id
        self.log(f"baseline {name}: fitting on the study's splits ...")
        args = (name, self.prepared.payload, self.spec.seed, baseline_kwargs(self.spec, name))
        if self.remote:
            import ray

            cpus = max(1.0, float(self.spec.resources.cpus_per_trial))
            task = ray.remote(_fit_one).options(num_cpus=cpus, num_gpus=0, max_retries=0, name=f"baseline-{name}")
            self._current = (name, run_id, task.remote(*args))
            return
        try:
            self._current = (name, run_id, _fit_one(*args))
        except Exception as err:  # noqa: BLE001 - ends its run FAILED, as a remote one would
            self._current = (name, run_id, err)
        except BaseException:
            self.client.set_terminated(run_id, "KILLED")
            raise

    def _collect(self, block: bool) -> bool:
        """Log the current baseline if it is done (or wait for it); whether it was."""
        name, run_id, handle = self._current
        try:
            if self.remote:
                import ray

                if not block and not ray.wait([handle], timeout=0)[0]:
                    return False
                result = ray.get(handle)
            elif isinstance(handle, Exception):
                raise handle
            else:
                result = handle
            self._log_result(run_id, result)
        except Exception as err:  # noqa: BLE001 - the study's trials stand without this baseline
            self.client.set_tag(run_id, "chemtune.error", repr(err)[:500])
            self.client.set_terminated(run_id, "FAILED")
            self.log(f"baseline {name} failed: {err!r}")
        else:
            self.client.set_terminated(run_id, "FINISHED")
            self.metrics[name] = result.metrics
            self.log(f"baseline {name}: valid_rmse {result.metrics['valid_rmse']:.3f}, "
                     f"test_rmse {result.metrics['test_rmse']:.3f} ({result.wall_s:.0f} s)")
        self._current = None
        return True

    def _log_result(self, run_id: str, result: Any) -> None:
        for key, value in result.params.items():
            self.client.log_param(run_id, key, str(value)[:500])
        for key, value in result.metrics.items():
            self.client.log_metric(run_id, key, value)
        self.client.log_metric(run_id, "fit_s", result.wall_s)
        with tempfile.TemporaryDirectory() as tmp:
            for split, pred in result.predictions.items():
                table = getattr(self.prepared.payload, split)
                path = Path(tmp) / f"{split}_predictions.csv"
                pd.DataFrame({"id": table.ids, "smiles": table.smiles, "target": table.targets,
                              "prediction": pred}).to_csv(path, index=False)
                self.client.log_artifact(run_id, str(path))

    def _advance(self, block: bool) -> None:
        while self.pending:
            if self._current is None:
                self._submit()
            if not self._collect(block):
                return

    def poll(self) -> None:
        """Without waiting: log a finished baseline and start the next."""
        self._advance(block=False)

    def finish(self) -> dict[str, dict[str, float]]:
        """Wait for every baseline; their metrics by name (those fitted by this job)."""
        self._advance(block=True)
        return self.metrics

    def cancel(self, reason: str = "the study ended before the baseline was fitted") -> None:
        """Stop the baseline being fitted (its run ends KILLED with ``reason``) and start no other."""
        self.queue.clear()
        if self._current is None:
            return
        name, run_id, handle = self._current
        self._current = None
        if self.remote:
            import ray

            ray.cancel(handle, force=True)
        self.client.set_tag(run_id, TAG_END_REASON, reason)
        self.client.set_terminated(run_id, "KILLED")
        self.log(f"baseline {name}: stopped ({reason})")


class BaselineCallback(tune.Callback):
    """Logs the study's baselines as they finish while Tune runs the trials (the driver's loop calls it)."""

    def __init__(self, job: BaselineJob) -> None:
        self.job: BaselineJob | None = job

    def __getstate__(self) -> dict[str, Any]:  # Tune saves callbacks with the experiment; a job is this driver's
        return {"job": None}

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.job is not None:
            self.job.poll()


def fit_baselines(spec: "StudySpec", prepared: "Prepared", tracking_uri: str, experiment_id: str,
                  parent_run_id: str, log: Callable[[str], Any] = print) -> dict[str, dict[str, float]]:
    """Fit the study's baselines not yet finished, in this process; return their metrics (a resumed study
    skips finished ones)."""
    return BaselineJob(spec, prepared, tracking_uri, experiment_id, parent_run_id, log, remote=False).finish()
