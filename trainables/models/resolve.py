"""``model.path`` as a local folder: an MLflow model URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``,
``runs:/ID/model``) is downloaded once into the chemtune cache, keyed by the version it names.

A registered pretrained checkpoint is an MLflow pyfunc whose ``model`` artifact is the transformers
folder; the folder inside is what a backbone loader reads. Trials read the study's store (the driver
passes ``MLFLOW_TRACKING_URI`` to them), so every worker resolves the same version.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from trainables.cache import cache_dir, fetch_once
from trainables.errors import StudyError

__all__ = ["MLFLOW_SCHEMES", "local_model", "fetch_model"]

MLFLOW_SCHEMES = ("models:/", "runs:/")


def local_model(spec: Any) -> Any:
    """``spec`` (a study's ``model:`` section, a ``trainables.spec.ModelSpec``) with ``path`` a local folder
    (MLflow URIs fetched); other paths pass through. Typed loosely: the schema imports the backbones, which
    call this, so naming the schema here would close an import circle."""
    if spec.path is None and getattr(spec, "pretrain", None):
        raise StudyError(f"model.pretrain: the pretraining stage {spec.pretrain} has not been run into model.path; "
                         "`chemtune launch` runs it first")
    if spec.path is None or not spec.path.startswith(MLFLOW_SCHEMES):
        return spec
    return spec.model_copy(update={"path": str(fetch_model(spec.path))})


def _pinned(uri: str) -> str:
    """A cache key naming what ``uri`` points at now (an alias moves; a version does not)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    store = mlflow.get_tracking_uri()
    if uri.startswith("models:/"):
        name, at, rest = uri[len("models:/"):].partition("@")
        client = MlflowClient()
        version = (client.get_model_version_by_alias(name, rest) if at
                   else client.get_model_version(*name.split("/", 1)))
        key = f"{version.name}/{version.version}/{version.run_id}"
    else:
        key = uri
    return hashlib.sha256(f"{store}\n{key}".encode()).hexdigest()[:20]


def fetch_model(uri: str) -> Path:
    """The transformers folder of MLflow model ``uri``, downloaded into the cache on first use."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        def fill(out: Path) -> None:
            with tempfile.TemporaryDirectory(prefix="chemtune-fetch-") as tmp:
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
                folder = next((p for p in (local / "artifacts" / "model", local / "model", local)
                               if (p / "config.json").is_file()), None)
                if folder is None:
                    raise StudyError(f"model.path {uri}: the MLflow model holds no transformers folder (config.json)")
                shutil.copytree(folder, out, dirs_exist_ok=True)

        return fetch_once(cache_dir() / "mlflow-models" / _pinned(uri), fill)
    except MlflowException as err:
        raise StudyError(f"model.path {uri}: {err.message.splitlines()[0]}") from None
