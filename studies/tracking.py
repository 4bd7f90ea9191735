"""MLflow tracking: the study's parent run, one child run per trial, leaderboards and the registry.

Only the driver talks to MLflow (a Ray Tune callback), so trial workers need no credentials and an
embedded SQLite store never sees concurrent writers.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS

from studies.health import driver_lease
from studies.results import leaderboard, register_best
from studies.store import (
    PARENT_TAG,
    TAG_DRIVER,
    TAG_JOINER,
    TAG_NUMBER,
    TAG_ROLE,
    TAG_STATE,
    TAG_STUDY,
    TAG_TRIAL,
    StudyPaths,
    resolve_tracking_uri,
    save_state,
    tracking_client,
    tracking_uri_scope,
)
from studies.trials import optuna_trial, stopped_early, trial_name
from trainables import TASKS

if TYPE_CHECKING:
    from studies.spec import StudySpec
    from trainables.base import Prepared

__all__ = [
    "StudyPaths", "StudyTracker", "MLflowTrialCallback", "resolve_tracking_uri", "leaderboard", "register_best",
    "TAG_STUDY", "TAG_ROLE", "TAG_TRIAL", "save_state", "close_study_run", "tracking_uri_scope",
]

# What Ray adds to every result: not chemtune's metrics, so never logged (nor charted before valid_rmse).
_RAY_KEYS = {*AUTO_RESULT_KEYS, *DEBUG_METRICS, "done", "trial_id", "experiment_tag", "iterations_since_restore",
             "time_since_restore", "timesteps_since_restore", "should_checkpoint"}
_PARENT = PARENT_TAG
log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _tag_number(trial: Any) -> int | None:
    ot_trial = optuna_trial(trial.trial_id) if trial is not None else None
    return None if ot_trial is None else ot_trial.number


def _driver_tag() -> str:
    """This driver's lease (the callbacks run in the driver), so ``reconcile`` knows whose run it is."""
    import json

    return json.dumps(driver_lease())


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value
    return out


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v) for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and k not in _RAY_KEYS
    }


class StudyTracker:
    """The study's MLflow experiment and parent run.

    Args:
        tracking_uri: MLflow tracking URI.
        spec: The study.
        paths: The embedded store (for the default artifact location).
        parent_run_id: Re-open this parent run (``chemtune resume``) instead of creating one.
    """

    def __init__(self, tracking_uri: str, spec: "StudySpec", paths: StudyPaths, parent_run_id: str | None = None) -> None:
        self.uri, self.spec = tracking_uri, spec
        self.client = tracking_client(tracking_uri)  # two drivers at once on a fresh store: one creates its tables
        name = spec.tracking.experiment or spec.name
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            location = paths.artifacts if tracking_uri == paths.mlflow_uri else None
            self.experiment_id = self.client.create_experiment(name, artifact_location=location)
        else:
            self.experiment_id = experiment.experiment_id
        if parent_run_id:
            self.parent_run_id = parent_run_id
            self.client.update_run(parent_run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id, run_name=spec.name,
                tags={TAG_STUDY: spec.name, TAG_ROLE: "study", "chemtune.task": spec.task,
                      "chemtune.metric": spec.metric, "chemtune.mode": spec.direction,
                      # lets the leaderboard sort other metrics without importing the task
                      "chemtune.maximize": ",".join(sorted(TASKS.get(spec.task).maximize)),
                      # a multi-objective study: the leaderboard marks the Pareto front of these
                      **({"chemtune.objectives": ",".join(spec.objectives)} if spec.objectives else {})},
            )
            self.parent_run_id = run.info.run_id

    def log_study(self, spec_yaml: str, prepared: "Prepared") -> None:
        """Study parameters, data report, split hashes and sizes on the parent run."""
        params = _flatten("", self.spec.model_dump(exclude={"tracking"}), {})
        params.update(prepared.summary)
        for key, value in params.items():
            self.client.log_param(self.parent_run_id, key, str(value)[:500])
        for key, value in prepared.tags.items():
            self.client.set_tag(self.parent_run_id, key, value)
        self.client.log_text(self.parent_run_id, spec_yaml, "study.yaml")
        self.client.log_dict(self.parent_run_id, [r.to_dict() for r in prepared.reports], "data_report.json")

    def close(self, status: str) -> None:
        """End the parent run; mark any child run still RUNNING as KILLED (no run is left RUNNING)."""
        close_study_run(self.client, self.parent_run_id, status)


def close_study_run(client: MlflowClient, parent_run_id: str, status: str) -> None:
    """End a study's parent run with ``status`` and its still-RUNNING trial runs as KILLED.

    Also how a study whose driver died (killed, or its Ray node lost) is tidied up by
    ``resume`` or ``launch --restart``.
    """
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    for run in client.search_runs(
        [experiment_id], filter_string=f"tags.`{_PARENT}` = '{parent_run_id}' and attributes.status = 'RUNNING'"
    ):
        client.set_terminated(run.info.run_id, "KILLED")
    client.set_terminated(parent_run_id, status)


class MLflowTrialCallback(tune.Callback):
    """One nested MLflow run per Tune trial: params, per-epoch metrics, final metrics, the model;
    and the study's parent run kept current: the best value so far and a link to its trial.

    Runs are named ``t03 lora r16 lr=1e-3`` (Optuna's trial number first, tagged as
    ``chemtune.optuna_trial``); the Optuna trial gets the run id as user attribute ``mlflow_run_id``,
    so optuna-dashboard and MLflow point at each other. A trial ASHA stopped early is tagged
    ``chemtune.state=pruned`` (Optuna marks it PRUNED). Pickles without its client (Tune saves
    callbacks with the experiment for ``resume``). With ``joiner`` (``launch --join``) it is one of several
    drivers of the parent run: its runs are tagged and found by joiner too, and the parent run's counts and
    best are recomputed from all the study's runs (no driver knows the others' trials).
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, task: str, tags: dict[str, str],
                 metric: str | None = None, mode: str = "min", max_epochs: int | None = None,
                 joiner: str | None = None) -> None:
        self.uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.task, self.tags = task, tags
        self.metric, self.mode, self.max_epochs = metric, mode, max_epochs
        self.joiner = joiner
        self.best: dict[str, Any] | None = None  # value, run_id, name of the best complete trial
        self.counts = {"complete": 0, "pruned": 0, "failed": 0}
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}
        self._logged: dict[str, int] = {}  # run id -> last step logged

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.uri)
        return self._client

    def run_id(self, trial: Any) -> str:
        """The trial's run: found by tag (a resumed study) or created."""
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        mine = f" and tags.`{TAG_JOINER}` = '{self.joiner}'" if self.joiner else ""  # Tune ids are per experiment
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{_PARENT}` = '{self.parent_run_id}' and tags.`{TAG_TRIAL}` = '{trial.trial_id}'{mine}",
        )
        if found:
            run_id = found[0].info.run_id
            self.client.set_tag(run_id, TAG_DRIVER, _driver_tag())  # a resumed study: this driver now
            self.client.update_run(run_id, status="RUNNING")
            # A trial restored from an older checkpoint than MLflow saw re-runs epochs: log each step once.
            history = self.client.get_metric_history(run_id, "epoch")
            self._logged[run_id] = max((int(m.step) for m in history), default=0)
        else:
            config = trial.config
            ot_trial = optuna_trial(trial.trial_id)
            number = None if ot_trial is None else ot_trial.number
            tags = {_PARENT: self.parent_run_id, TAG_TRIAL: trial.trial_id, TAG_ROLE: "trial",
                    "chemtune.method": str(config.get("method") or config.get("arch", "")), "chemtune.task": self.task,
                    TAG_DRIVER: _driver_tag(), **({TAG_JOINER: self.joiner} if self.joiner else {}), **self.tags}
            if number is not None:
                tags[TAG_NUMBER] = str(number)
            run = self.client.create_run(self.experiment_id, run_name=trial_name(number, config), tags=tags)
            run_id = run.info.run_id
            for key, value in config.items():
                self.client.log_param(run_id, key, str(value)[:500])
            if ot_trial is not None:
                ot_trial.set_user_attr("mlflow_run_id", run_id)
                ot_trial.set_user_attr("ray_trial_id", trial.trial_id)
        self._runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.run_id(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run_id = self.run_id(trial)
        step = int(result.get("training_iteration", 0))
        if step <= self._logged.get(run_id, 0):
            return
        self._logged[run_id] = step
        metrics = _numeric(result)
        if metrics:
            self.client.log_batch(run_id, metrics=[Metric(k, v, _now_ms(), step) for k, v in metrics.items()])
        node = result.get("node_ip")
        if node and step == 1:
            self.client.set_tag(run_id, "chemtune.node_ip", str(node))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.run_id(trial)
        result = trial.last_result or {}
        epochs = int(result.get("epoch", 0))
        self.client.set_tag(run_id, "chemtune.epochs", str(epochs))
        pruned = self.max_epochs is not None and stopped_early(result, self.max_epochs)
        self.client.set_tag(run_id, TAG_STATE, "pruned" if pruned else "complete")
        if pruned:
            self.client.set_tag(run_id, "chemtune.pruned_at_epoch", str(epochs))
        try:
            self._log_checkpoint(run_id, trial)
        except Exception as err:  # noqa: BLE001 - a trial is not lost because its model could not be logged
            self.client.set_tag(run_id, "chemtune.model_error", repr(err)[:500])
            self.client.set_terminated(run_id, "FAILED")
            self._update_study("failed")
        else:
            self.client.set_terminated(run_id, "FINISHED")
            self._update_study("pruned" if pruned else "complete", run_id, trial, result)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.run_id(trial)
        self._tag_error(run_id, trial)
        if trial.error_file and os.path.exists(trial.error_file):
            self.client.log_artifact(run_id, trial.error_file)
        self.client.set_terminated(run_id, "FAILED")
        self._update_study("failed")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.run_id(trial)
        self.client.set_tag(run_id, "chemtune.recovered", "true")
        self._tag_error(run_id, trial)  # why it is being retried; stays on the run if the retry succeeds

    def _tag_error(self, run_id: str, trial: Any) -> None:
        """``chemtune.error`` (type: first line), ``chemtune.error_type`` and ``chemtune.failures`` on the run."""
        kind, message = error_summary(trial)
        self.client.set_tag(run_id, "chemtune.error", f"{kind}: {message}"[:500])
        self.client.set_tag(run_id, "chemtune.error_type", kind)
        self.client.set_tag(run_id, "chemtune.failures", str(int(getattr(trial, "num_failures", 0) or 0)))

    def _update_study(self, state: str, run_id: str | None = None, trial: Any = None,
                      result: Mapping[str, Any] | None = None) -> None:
        """The parent run carries the study: counts, and the best complete trial so far (a metric
        the chart view shows at the top level, tags, and a description linking to the trial)."""
        try:
            if self.joiner:
                self._recount()
            else:
                self.counts[state] += 1
            done = sum(self.counts.values())
            metrics = [Metric(f"trials_{k}", float(v), _now_ms(), done) for k, v in self.counts.items()]
            value = (result or {}).get(self.metric) if self.metric else None
            if state == "complete" and isinstance(value, (int, float)) and math.isfinite(value) and not self.joiner:
                better = self.best is None or (value < self.best["value"] if self.mode == "min" else value > self.best["value"])
                if better:
                    self.best = {"value": float(value), "run_id": run_id,
                                 "name": self.client.get_run(run_id).info.run_name, "number": _tag_number(trial)}
                    link = f"#/experiments/{self.experiment_id}/runs/{run_id}"
                    for key, tag in (("chemtune.best_run_id", run_id), ("chemtune.best_trial", self.best["name"]),
                                     ("chemtune.best_run_link", link),
                                     ("mlflow.note.content", f"Best {self.metric} = {value:.4g}: trial "
                                      f"[{self.best['name']}]({link}) (run `{run_id}`)")):
                        self.client.set_tag(self.parent_run_id, key, tag)
            if self.best is not None:
                metrics.append(Metric(f"best_{self.metric}", self.best["value"], _now_ms(), done))
            self.client.log_batch(self.parent_run_id, metrics=metrics)
        except Exception as err:  # noqa: BLE001 - the study summary never fails a trial
            log.warning("could not update the study run: %r", err)

    def _recount(self) -> None:
        """Counts and best over every driver's runs of the parent (a joined study), from MLflow."""
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{_PARENT}` = '{self.parent_run_id}' and tags.`{TAG_ROLE}` = 'trial'")
        self.counts = {"complete": 0, "pruned": 0, "failed": 0}
        best = None
        for run in runs:
            if run.info.status == "FAILED":
                self.counts["failed"] += 1
            elif run.info.status == "FINISHED" and run.data.tags.get(TAG_STATE) in ("complete", "pruned"):
                self.counts[run.data.tags[TAG_STATE]] += 1
                value = run.data.metrics.get(self.metric) if self.metric else None
                if run.data.tags[TAG_STATE] == "complete" and value is not None and math.isfinite(value) and (
                        best is None or (value < best[0] if self.mode == "min" else value > best[0])):
                    best = (float(value), run)
        if best is None:  # written even when unchanged here: another driver may have just written an older best
            return
        value, run = best
        self.best = {"value": value, "run_id": run.info.run_id, "name": run.info.run_name,
                     "number": run.data.tags.get(TAG_NUMBER)}
        link = f"#/experiments/{self.experiment_id}/runs/{run.info.run_id}"
        for key, tag in (("chemtune.best_run_id", run.info.run_id), ("chemtune.best_trial", run.info.run_name),
                         ("chemtune.best_run_link", link),
                         ("mlflow.note.content", f"Best {self.metric} = {value:.4g}: trial "
                          f"[{run.info.run_name}]({link}) (run `{run.info.run_id}`)")):
            self.client.set_tag(self.parent_run_id, key, tag)

    def _log_checkpoint(self, run_id: str, trial: Any) -> None:
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return
        task = TASKS.get(self.task)
        with checkpoint.as_directory() as folder:
            folder = Path(folder)
            for extra in sorted(folder.iterdir()):
                if extra.is_file() and extra.name != "state.pt":
                    self.client.log_artifact(run_id, str(extra))
            if task.pyfunc is not None and (folder / "model").is_dir():
                with tempfile.TemporaryDirectory() as tmp:  # MLflow copies; Tune may delete the checkpoint
                    local = Path(tmp) / "model"
                    shutil.copytree(folder / "model", local)
                    python_model = task.pyfunc()
                    # the task's pyfunc describes what it reads and returns (MLflow checks inputs and params by it)
                    describe = getattr(python_model, "model_signature", None)
                    with tracking_uri_scope(self.uri), mlflow.start_run(run_id=run_id):
                        info = mlflow.pyfunc.log_model(
                            name="model", python_model=python_model, artifacts={"model": str(local)},
                            pip_requirements=list(task.pip_requirements)
                            + (["chemprop==2.3.1"] if (local / "dmpnn.json").is_file() else []),
                            signature=describe(local) if describe is not None else None,
                        )
                self.client.set_tag(run_id, "chemtune.model_uri", info.model_uri)
def _local_error(trial: Any) -> Any:
    """The trial's latest error from its local error files (pickled, else the text of the last failure)."""
    try:
        pickled = Path(trial.pickled_error_file) if getattr(trial, "pickled_error_file", None) else None
        if pickled is not None and pickled.is_file():
            import cloudpickle

            with pickled.open("rb") as f:
                return cloudpickle.load(f)
        text = Path(trial.error_file) if getattr(trial, "error_file", None) else None
        if text is not None and text.is_file():
            last = text.read_text(errors="replace").rsplit("Failure # ", 1)[-1]
            return RuntimeError(last.split("\n", 1)[-1].strip() or last.strip())
    except Exception:  # noqa: BLE001 - an unreadable error file still gets a tag
        return None
    return None


def error_summary(trial: Any) -> tuple[str, str]:
    """The root cause of a Tune trial's error: its type name and first line (not Ray's wrapper)."""
    try:
        error = trial.get_pickled_error() or trial.get_error()
    except Exception:  # noqa: BLE001 - an unreadable error file still gets a tag
        error = None
    if error is None:  # Tune writes the error beside the trial first and syncs it to storage later (a lost node)
        error = _local_error(trial)
    cause = getattr(error, "cause", None) or error
    if cause is None:
        return "UnknownError", "the trial failed without an error file"
    text = str(cause).strip()
    if type(cause).__name__ in {"RayTaskError", "TuneError"} or "Traceback" in text:
        # the wrapped traceback's last line names the original exception
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(" ")]
        last = lines[-1] if lines else text
        name, _, message = last.partition(": ")
        return name.rsplit(".", 1)[-1] or type(cause).__name__, message or last
    first = text.splitlines()[0] if text else ""
    return type(cause).__name__, first


