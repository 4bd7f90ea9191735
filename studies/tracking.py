"""MLflow tracking: the study's parent run, one child run per trial, leaderboards and the registry.

Only the driver talks to MLflow (a Ray Tune callback), so trial workers need no credentials and an
embedded SQLite store never sees concurrent writers.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from ray import tune

from trainables import TASKS
from trainables.errors import StudyError
from trainables.io import atomic_write_json

if TYPE_CHECKING:
    from studies.spec import StudySpec
    from trainables.base import Prepared

__all__ = [
    "StudyPaths", "StudyTracker", "MLflowTrialCallback", "resolve_tracking_uri", "leaderboard", "register_best",
    "TAG_STUDY", "TAG_ROLE", "TAG_TRIAL", "save_state", "close_study_run", "tracking_uri_scope",
]

TAG_STUDY, TAG_ROLE, TAG_TRIAL = "chemtune.study", "chemtune.role", "chemtune.trial_id"
_RAY_KEYS = {"time_this_iter_s", "time_total_s", "training_iteration"}
_PARENT = "mlflow.parentRunId"


@dataclass(frozen=True)
class StudyPaths:
    """The embedded store: ``root`` holds MLflow's SQLite file and artifacts, Optuna's database,
    Ray Tune's storage and each study's state (``studies/NAME.yaml`` + ``NAME.json``)."""

    root: Path

    @classmethod
    def default(cls, root: str | os.PathLike[str] | None = None) -> "StudyPaths":
        return cls(Path(root or os.environ.get("CHEMTUNE_HOME", "chemtune-runs")).expanduser().resolve())

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def artifacts(self) -> str:
        return (self.root / "artifacts").as_uri()

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.root / 'optuna.db'}"

    @property
    def tune_storage(self) -> str:
        return str(self.root / "ray")

    def study_file(self, name: str) -> Path:
        return self.root / "studies" / f"{name}.yaml"

    def state_file(self, name: str) -> Path:
        return self.root / "studies" / f"{name}.json"


def resolve_tracking_uri(explicit: str | None, paths: StudyPaths) -> str:
    """``--tracking-uri`` or the study's ``tracking.tracking_uri``, else ``MLFLOW_TRACKING_URI``, else SQLite."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI") or paths.mlflow_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return uri


@contextmanager
def tracking_uri_scope(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for a block only.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``, which would silently redirect
    every later study of this process; this restores both afterwards.
    """
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # None unsets the variable again


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
        self.client = MlflowClient(tracking_uri)
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
                      "chemtune.metric": spec.metric, "chemtune.mode": spec.direction},
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
    """One nested MLflow run per Tune trial: params, per-epoch metrics, final metrics, the model.

    Pickles without its client (Tune saves callbacks with the experiment for ``resume``).
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, task: str, tags: dict[str, str]) -> None:
        self.uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.task, self.tags = task, tags
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}

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
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{_PARENT}` = '{self.parent_run_id}' and tags.`{TAG_TRIAL}` = '{trial.trial_id}'",
        )
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            config = trial.config
            run = self.client.create_run(
                self.experiment_id, run_name=f"{trial.trial_id}",
                tags={_PARENT: self.parent_run_id, TAG_TRIAL: trial.trial_id, TAG_ROLE: "trial",
                      "chemtune.method": str(config.get("method") or config.get("arch", "")), "chemtune.task": self.task, **self.tags},
            )
            run_id = run.info.run_id
            for key, value in config.items():
                self.client.log_param(run_id, key, str(value)[:500])
        self._runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.run_id(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run_id = self.run_id(trial)
        step = int(result.get("training_iteration", 0))
        for key, value in _numeric(result).items():
            self.client.log_metric(run_id, key, value, step=step)
        node = result.get("node_ip")
        if node and step == 1:
            self.client.set_tag(run_id, "chemtune.node_ip", str(node))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.run_id(trial)
        epochs = int((trial.last_result or {}).get("epoch", 0))
        self.client.set_tag(run_id, "chemtune.epochs", str(epochs))
        try:
            self._log_checkpoint(run_id, trial)
        except Exception as err:  # noqa: BLE001 - a trial is not lost because its model could not be logged
            self.client.set_tag(run_id, "chemtune.model_error", repr(err)[:500])
            self.client.set_terminated(run_id, "FAILED")
        else:
            self.client.set_terminated(run_id, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.run_id(trial)
        if trial.error_file and os.path.exists(trial.error_file):
            self.client.log_artifact(run_id, trial.error_file)
        self.client.set_terminated(run_id, "FAILED")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.client.set_tag(self.run_id(trial), "chemtune.recovered", "true")

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
                    with tracking_uri_scope(self.uri), mlflow.start_run(run_id=run_id):
                        info = mlflow.pyfunc.log_model(
                            name="model", python_model=task.pyfunc(), artifacts={"model": str(local)},
                            pip_requirements=list(task.pip_requirements)
                            + (["chemprop==2.3.1"] if (local / "dmpnn.json").is_file() else []),
                        )
                self.client.set_tag(run_id, "chemtune.model_uri", info.model_uri)


def _parent_run(client: MlflowClient, name: str) -> tuple[str, Any]:
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`{TAG_STUDY}` = '{name}' and tags.`{TAG_ROLE}` = 'study'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    if not runs:
        raise StudyError(f"no study named {name!r} in the tracking store {client.tracking_uri}")
    return runs[0].info.experiment_id, runs[0]


def leaderboard(name: str, tracking_uri: str, metric: str | None = None, top: int | None = None) -> pd.DataFrame:
    """Trials of the latest run of study ``name``, best first by ``metric`` (default: the study's)."""
    client = MlflowClient(tracking_uri)
    experiment_id, parent = _parent_run(client, name)
    metric = metric or parent.data.tags["chemtune.metric"]
    mode = parent.data.tags.get("chemtune.mode", "min") if metric == parent.data.tags["chemtune.metric"] else (
        "max" if metric.rsplit("_", 1)[-1] in TASKS.get(parent.data.tags["chemtune.task"]).maximize else "min"
    )
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{_PARENT}` = '{parent.info.run_id}'")
    rows = []
    for run in runs:
        m, tags = run.data.metrics, run.data.tags
        role = tags.get(TAG_ROLE, "trial")
        label = tags.get(TAG_TRIAL) if role == "trial" else f"{role}:{tags.get('chemtune.' + role, '')}"
        row = {"trial": label, "run_id": run.info.run_id, "status": run.info.status,
               "method": tags.get("chemtune.method"), "epochs": m.get("epoch"), "role": role}
        row.update({k: v for k, v in m.items() if k.startswith(("valid_", "test_"))})
        row["trainable_params"] = m.get("trainable_params")
        row["wall_s"] = ((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000
        row["model_uri"] = tags.get("chemtune.model_uri")
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    if metric not in frame.columns and not metric.startswith(("valid_", "test_")):
        raise StudyError(f"metric {metric!r} was not logged; choose from {sorted(c for c in frame.columns if '_' in c)}")
    if metric not in frame.columns:  # no trial reported it yet (all failed, say)
        frame[metric] = float("nan")
    first = ["trial", "run_id", "status", "method", "epochs"]
    scores = sorted(c for c in frame.columns if c.startswith("valid_")) + sorted(c for c in frame.columns if c.startswith("test_"))
    frame = frame[first + scores + [c for c in frame.columns if c not in first and c not in scores]]
    frame = frame.sort_values(metric, ascending=(mode == "min"), na_position="last", kind="stable")
    frame.insert(0, "rank", range(1, len(frame) + 1))
    frame = frame.reset_index(drop=True)
    return frame.head(top) if top else frame


def register_best(name: str, model_name: str, tracking_uri: str, alias: str | None = "champion",
                  metric: str | None = None) -> Any:
    """Register the best finished trial's model of study ``name``; set ``alias`` on the new version."""
    board = leaderboard(name, tracking_uri, metric)
    candidates = board[(board["status"] == "FINISHED") & board["model_uri"].notna()] if not board.empty else board
    if candidates.empty:
        raise StudyError(f"study {name!r} has no finished trial with a logged model")
    best = candidates.iloc[0]
    client = MlflowClient(tracking_uri)
    with tracking_uri_scope(tracking_uri):
        version = mlflow.register_model(
            best["model_uri"], model_name,
            tags={TAG_STUDY: name, "chemtune.trial_id": str(best["trial"])},
        )
    if alias:
        client.set_registered_model_alias(model_name, alias, version.version)
    return version


def save_state(paths: StudyPaths, name: str, state: dict[str, Any]) -> None:
    """Atomically record where a study's runs live (for ``chemtune resume``)."""
    atomic_write_json(paths.state_file(name), state)
