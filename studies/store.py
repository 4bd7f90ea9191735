"""Where a study's records live: the embedded store's folders, the MLflow URI, the tags that mark runs.

Light on purpose (no Ray, no torch): the CLI's read-only verbs import only this, ``studies.results``
and MLflow.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studies.names import check_name

__all__ = [
    "StudyPaths", "resolve_tracking_uri", "tracking_uri_scope", "sqlite_init_lock", "tracking_client", "save_state",
    "TAG_STUDY", "TAG_ROLE", "TAG_TRIAL", "TAG_NUMBER", "TAG_STATE", "PARENT_TAG", "TAG_DRIVER", "TAG_JOINER",
]

_SCOPE_LOCK = threading.RLock()  # re-entrant: a scope may open inside another (same thread)

TAG_STUDY, TAG_ROLE, TAG_TRIAL = "chemtune.study", "chemtune.role", "chemtune.trial_id"
TAG_NUMBER = "chemtune.optuna_trial"  # Optuna's trial number: what optuna-dashboard shows
TAG_STATE = "chemtune.state"  # complete | pruned (stopped early by ASHA) | failed
PARENT_TAG = "mlflow.parentRunId"
# The driver that runs a trial run (its lease, JSON): several drivers may share one study (``launch --join``),
# so a run is an orphan when *its* driver is gone, not when the study's first driver is.
TAG_DRIVER = "chemtune.driver"
TAG_JOINER = "chemtune.joiner"  # the joined driver (studies/join.py) whose Tune experiment runs the trial


@contextmanager
def sqlite_init_lock(url: str) -> Iterator[None]:
    """Hold an inter-process lock beside a SQLite database while a client creates (or migrates) its schema.

    Two drivers started at once on a fresh embedded store both ran MLflow's schema migrations, and one failed
    ("table logged_models already exists"); Optuna creates its tables the same way. Server URLs need no lock.
    """
    path = None
    if url.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        path = make_url(url).database
    if not path or path == ":memory:":
        yield
        return
    from filelock import FileLock

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.init.lock", timeout=600):
        yield


def tracking_client(uri: str) -> Any:
    """An ``MlflowClient`` of ``uri``; the first in this process creates a fresh SQLite store's tables under
    :func:`sqlite_init_lock` (MLflow caches the store per URI, so later clients do not migrate again)."""
    from mlflow.tracking import MlflowClient

    with sqlite_init_lock(uri):
        return MlflowClient(uri)


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
        return self.root / "studies" / f"{check_name('study', name)}.yaml"

    def state_file(self, name: str) -> Path:
        return self.root / "studies" / f"{check_name('study', name)}.json"


def resolve_tracking_uri(explicit: str | None, paths: StudyPaths) -> str:
    """``--tracking-uri`` or the study's ``tracking.tracking_uri``, else ``MLFLOW_TRACKING_URI``, else SQLite.

    An ``http(s)`` URI's ``user:password@`` moves to MLflow's credential variables
    (:func:`studies.redact.adopt_credentials`): the URI returned, saved and printed holds no password.
    """
    from studies.redact import adopt_credentials

    uri = adopt_credentials(explicit or os.environ.get("MLFLOW_TRACKING_URI") or paths.mlflow_uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return uri


@contextmanager
def tracking_uri_scope(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for a block only.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``, which would silently redirect
    every later study of this process; this restores both afterwards. The URI is process-global, so
    the block holds a process-wide lock: two threads (two ``register`` calls, a study logging a model
    while another registers) would otherwise restore each other's URI mid-call and send one call to
    the wrong store ("Logged model ... not found", seen in CI).
    """
    import mlflow

    with _SCOPE_LOCK:
        previous = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)  # None unsets the variable again


def save_state(paths: StudyPaths, name: str, state: dict[str, Any]) -> None:
    """Atomically record where a study's runs live (for ``chemtune resume``)."""
    from trainables.io import atomic_write_json

    atomic_write_json(paths.state_file(name), state)
