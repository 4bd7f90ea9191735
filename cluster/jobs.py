"""Submit a study to a Ray cluster through the Ray Jobs API (``chemtune submit|status|logs``).

The job's driver runs ``chemtune launch STUDY --address auto`` on the head node. Its runtime environment
ships the study file (``working_dir``) and, unless chemtune is installed on the cluster image, the chemtune
packages themselves (``py_modules``). Tracking settings (``MLFLOW_TRACKING_URI``, ``CHEMTUNE_*``) travel once, as variables on the driver's command
line: ``chemtune launch`` hands them on to its trials itself, and Ray refuses a driver whose ``ray.init``
repeats a variable of the job's runtime environment. Secrets do not travel at all:
``*_PASSWORD``, ``*_TOKEN`` and ``*_SECRET*`` variables are never put in the runtime environment (the Ray
dashboard shows it to anyone who can list jobs) — give them to the cluster's nodes from a secret instead.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from trainables.errors import StudyError

__all__ = ["FORWARDED_ENV", "entrypoint", "runtime_env", "submit", "status", "logs", "wait"]

FORWARDED_ENV = re.compile(r"^(MLFLOW_TRACKING_URI|MLFLOW_EXPERIMENT_NAME|CHEMTUNE_\w+|HF_\w+|AWS_REGION|AWS_ENDPOINT_URL\w*)$")
"""Environment variables copied from the submitting shell into the job (non-secret tracking settings)."""
_SECRET = re.compile(r"PASSWORD|TOKEN|SECRET|CREDENTIAL|_KEY$", re.IGNORECASE)
_PACKAGES = ("studies", "trainables", "search_spaces", "cluster")
_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def _package_dirs() -> list[str]:
    import importlib

    return [str(Path(importlib.import_module(name).__file__).parent) for name in _PACKAGES]


def runtime_env(
    study_dir: Path, ship_code: bool = True, env: dict[str, str] | None = None, pip: list[str] | None = None
) -> dict[str, Any]:
    """The job's runtime environment.

    Args:
        study_dir: Folder that becomes the job's working directory (holds the study file).
        ship_code: Upload the chemtune packages as ``py_modules`` (off when the cluster image has chemtune).
        env: Extra environment variables (refused if they look like secrets).
        pip: Extra pip packages to install for the job.

    Returns:
        A Ray runtime-env dict.
    """
    env_vars = {k: v for k, v in os.environ.items() if FORWARDED_ENV.match(k) and not _SECRET.search(k)}
    for key in env or {}:
        if _SECRET.search(key):
            raise StudyError(f"{key}: secrets are not passed in a job's runtime environment; set it on the cluster")
    env_vars.update(env or {})
    # The driver's settings go on the entrypoint's command line instead (see `entrypoint`): `chemtune launch`
    # hands them to its trials through ray.init's runtime env, and Ray refuses a driver env that repeats a job's.
    env_vars = {k: v for k, v in env_vars.items() if not _driver_setting(k)}
    spec: dict[str, Any] = {"working_dir": str(study_dir), "env_vars": env_vars,
                            "excludes": ["__pycache__", "*.pyc", "chemtune-runs"]}
    if ship_code:
        spec["py_modules"] = _package_dirs()
    if pip:
        spec["pip"] = list(pip)
    return spec


def _driver_setting(key: str) -> bool:
    return key == "MLFLOW_TRACKING_URI" or key.startswith("CHEMTUNE_")


def entrypoint(study_file: str, restart: bool = False, env: dict[str, str] | None = None,
               tracking_uri: str | None = None) -> str:
    """The job's shell command: ``MLFLOW_TRACKING_URI=... CHEMTUNE_*=... python -m studies.cli launch STUDY``.

    The variables keep their local meaning there (the study's ``tracking.tracking_uri`` wins over
    ``MLFLOW_TRACKING_URI``); ``tracking_uri`` (``chemtune submit --tracking-uri``) wins over both, as
    ``chemtune launch --tracking-uri`` does. ``python -m studies.cli`` works whether chemtune is installed
    on the cluster or shipped as ``py_modules``.
    """
    settings = {k: v for k, v in {**os.environ, **(env or {})}.items()
                if _driver_setting(k) and FORWARDED_ENV.match(k) and not _SECRET.search(k)}
    for key, value in [*settings.items(), ("--tracking-uri", tracking_uri or "")]:
        if "://" in value and urlsplit(value).password:  # the entrypoint is shown to anyone listing jobs
            raise StudyError(f"{key}: a password in a URI would show in the job's entrypoint; put it in "
                             "MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials) on the cluster instead")
    prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in sorted(settings.items()))
    flags = (f" --tracking-uri {shlex.quote(tracking_uri)}" if tracking_uri else "") + (" --restart" if restart else "")
    return f"{prefix}python -m studies.cli launch {shlex.quote(study_file)} --address auto{flags}"


def submit(
    study_path: str | os.PathLike[str],
    address: str,
    *,
    load_study: Callable[[Path], Any],
    ship_code: bool = True,
    env: dict[str, str] | None = None,
    pip: list[str] | None = None,
    restart: bool = False,
    submission_id: str | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Submit ``chemtune launch STUDY --address auto`` as a Ray job; return its id.

    Args:
        study_path: The study file; validated here first, so a bad file fails before anything is uploaded.
        address: The Ray dashboard, e.g. ``http://HOST:8265``.
        load_study: Reads and validates the study (``studies.spec.load_study``: cluster code does not
            import the study layer, which sits above it).
        ship_code: Upload the chemtune packages with the job (see :func:`runtime_env`).
        env: Extra non-secret environment variables for the job.
        pip: Extra pip packages for the job.
        restart: Pass ``--restart`` to ``chemtune launch``.
        submission_id: Job id to use (default: Ray picks one).
        tracking_uri: MLflow tracking URI for the study (``--tracking-uri`` of ``chemtune launch``).
    """
    study_path = Path(study_path)
    spec = load_study(study_path)
    with tempfile.TemporaryDirectory(prefix="chemtune-job-") as tmp:
        shutil.copy(study_path, Path(tmp) / study_path.name)
        return _client(address).submit_job(
            entrypoint=entrypoint(study_path.name, restart, env, tracking_uri),
            runtime_env=runtime_env(Path(tmp), ship_code, env, pip),
            submission_id=submission_id, metadata={"chemtune_study": spec.name},
        )


def status(job_id: str, address: str) -> str:
    """The job's status: ``PENDING``, ``RUNNING``, ``SUCCEEDED``, ``FAILED`` or ``STOPPED``."""
    return str(_client(address).get_job_status(job_id).value)


def logs(job_id: str, address: str) -> str:
    """Everything the job's driver printed so far."""
    return _client(address).get_job_logs(job_id)


def wait(job_id: str, address: str, timeout: float = 3600, interval: float = 2.0) -> str:
    """Poll until the job ends; return its final status (raise ``TimeoutError`` after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    state = "unknown"
    while time.monotonic() < deadline:
        state = status(job_id, address)
        if state in _TERMINAL:
            return state
        time.sleep(interval)
    raise TimeoutError(f"job {job_id} still {state} after {timeout:.0f}s")

