"""Keep credentials out of everything chemtune writes: Ray's runtime_env, MLflow params/artifacts, logs.

One rule (:func:`redact`) for every place a URI or an environment value can leave the process, and one
move (:func:`adopt_credentials`) that keeps an MLflow URI's password out of every copy of the URI.
"""

from __future__ import annotations

import functools
import io
import os
import re
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TextIO, TypeVar

__all__ = [
    "SECRET_NAME", "is_secret_name", "redact_url", "worker_env", "split_credentials", "adopt_credentials",
    "secret_values", "redact", "RedactingStream", "guard_process", "private_files", "USERNAME_ENV", "PASSWORD_ENV",
]

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


# -- credentials in a URI: moved into MLflow's own variables, so no copy of the URI carries them ---------------

T = TypeVar("T")
USERNAME_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
_SEEN: set[str] = set()  # passwords met in URIs this process adopted: redacted from its output too


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """``http://user:pw@host/x`` -> ``("http://host/x", "user", "pw")`` (user and password URL-decoded)."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri, None, None
    host = parts.netloc.rpartition("@")[2]
    clean = urlunsplit(parts._replace(netloc=host))
    return clean, unquote(parts.username or ""), None if parts.password is None else unquote(parts.password)


def adopt_credentials(uri: str, environ: MutableMapping[str, str] | None = None) -> str:
    """The URI a study records, prints and pickles: an ``http(s)`` MLflow URI without its ``user:password@``.

    MLflow reads basic-auth credentials from ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` (or the 0600 file
    ``~/.mlflow/credentials``), so the credentials move into this process's environment (a URI's explicit
    password wins over the variable's) and the URI that goes into saved state, Tune's pickled callbacks, MLflow
    tags and the "View run ... at:" lines holds none. ``resume`` then reads them from the same variables or
    file. Database URIs (``postgresql://user:pw@``) keep theirs: SQLAlchemy has no other place for it, so files
    holding one are written 0600 and every display redacts it.
    """
    environ = os.environ if environ is None else environ
    if not uri.lower().startswith(("http://", "https://")):
        if (password := split_credentials(uri)[2]) is not None:
            _SEEN.add(password)
        return uri
    clean, user, password = split_credentials(uri)
    if user:
        environ[USERNAME_ENV] = user
    if password is not None:
        environ[PASSWORD_ENV] = password
        _SEEN.add(password)
    return clean


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values to blank out of any output: secret-named variables' values and passwords met in URIs."""
    from urllib.parse import quote

    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if is_secret_name(k)} | _SEEN
    values |= {quote(v, safe="") for v in values}  # as it appears inside a URI
    return sorted((v for v in values if len(v) >= 6), key=len, reverse=True)  # a short "secret" (true, 1) is noise


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """:func:`redact_url`, then every known secret value replaced by ``***``: the rule for all output."""
    text = redact_url(text)
    for value in secret_values(environ):
        text = text.replace(value, "***")
    return text


class RedactingStream(io.TextIOBase):
    """A text stream that redacts (:func:`redact`) what it passes on: MLflow's and Ray's own lines, rich's
    tables and tracebacks all go through ``sys.stdout``/``sys.stderr`` of the CLI."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._stream.encoding

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def private_files(func: Callable[..., T]) -> Callable[..., T]:
    """Run ``func`` with umask 077: what it writes (and the local Ray it starts, which inherits the umask) is
    its user's only. Restored after, so a notebook or test process keeps its own."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        before = os.umask(0o077)
        try:
            return func(*args, **kwargs)
        finally:
            os.umask(before)

    return wrapper


def guard_process(argv: list[str] | None = None) -> Callable[[], None]:
    """What the ``chemtune`` CLI does first: files it (and its local Ray) writes are private (umask 077),
    ``MLFLOW_TRACKING_URI``'s credentials move to MLflow's variables, the command line other tools record
    (Ray keeps ``sys.argv`` as the job's entrypoint) is redacted, and stdout/stderr are redacted.

    Returns:
        What restores the umask and the streams (for an in-process call: a test, a notebook).
    """
    umask, streams = os.umask(0o077), (sys.stdout, sys.stderr)

    def restore() -> None:
        os.umask(umask)
        sys.stdout, sys.stderr = streams

    if os.environ.get("MLFLOW_TRACKING_URI"):
        os.environ["MLFLOW_TRACKING_URI"] = adopt_credentials(os.environ["MLFLOW_TRACKING_URI"])
    if argv is not None:
        for value in argv:
            if (password := split_credentials(value)[2]) is not None:
                _SEEN.add(password)
        argv[:] = [redact_url(a) for a in argv]
    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout = RedactingStream(sys.stdout)
    if not isinstance(sys.stderr, RedactingStream):
        sys.stderr = RedactingStream(sys.stderr)
    return restore
