"""Keep credentials out of everything chemtune writes: Ray's runtime_env, MLflow params/artifacts, logs."""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["SECRET_NAME", "is_secret_name", "redact_url", "worker_env"]

# KEY covers API_KEY, ACCESS_KEY, S3_KEY...: a knob whose name says KEY is not worth the risk.
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|CREDENTIAL|KEY|PRIVATE", re.IGNORECASE)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@")


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a credential."""
    return bool(SECRET_NAME.search(name))


def redact_url(text: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://user:***@host`` anywhere in ``text``."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def worker_env(environ: Mapping[str, str], tracking_uri: str) -> dict[str, str]:
    """The variables a trial needs (``CHEMTUNE_*``, the MLflow URI) without any credential.

    Ray's runtime_env is stored in the GCS and shown by the dashboard and ``ray job`` tools, so nothing
    secret goes there: workers that must authenticate read their credentials from their own node's
    environment (a Kubernetes secret, the cluster launcher's env), never from the driver's.
    """
    env = {k: v for k, v in environ.items() if k.startswith("CHEMTUNE_") and not is_secret_name(k)}
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    return {k: redact_url(v) for k, v in env.items()}
