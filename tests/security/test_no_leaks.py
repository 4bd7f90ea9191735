"""No credential printed or written, every socket on loopback: one real launch against a basic-auth MLflow.

A ``mlflow server --app-name basic-auth`` on 127.0.0.1 (SQLite stores); ``chemtune launch`` of a one-trial
study with the password in the tracking URI *and* in ``MLFLOW_TRACKING_PASSWORD``; ``chemtune resume`` with the
password only in the environment (the saved state has none); a failing ``chemtune leaderboard`` with the password
in ``--tracking-uri``. Then the terminal output, everything under the runs folder, Ray's session folder and the
server's store are searched for the password (raw and URL-encoded), file modes are checked, and the listening
sockets of the launch's whole process tree (driver, GCS, raylet, agents, workers), sampled while it ran, must
all be loopback.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import pytest
import yaml

from tests.conftest import ROOT, tiny_study
from tests.support.local_cluster import LocalMlflowServer

pytestmark = pytest.mark.slow

USER = "chemist"
# URL-special characters on purpose: the URI carries it percent-encoded, the environment raw
PASSWORD = f"Pw-{secrets.token_hex(10)}/+@x"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMlflowServer]:
    store = tmp_path_factory.mktemp("mlflow-store")
    with LocalMlflowServer(f"sqlite:///{store}/mlflow.db", auth_database_uri=f"sqlite:///{store}/auth.db",
                           admin_username=USER, admin_password=PASSWORD) as mlflow_server:
        yield mlflow_server


def _uri(server: LocalMlflowServer) -> str:
    return f"http://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{server.port}"


def _listening(root: psutil.Process) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every listening socket of ``root`` and its descendants."""
    seen = set()
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return seen
    for proc in procs:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    seen.add((proc.name(), conn.laddr.ip, conn.laddr.port))
        except psutil.Error:  # a worker that just ended
            continue
    return seen


def _run(args: list[str], env: dict[str, str], watch: bool = False) -> dict[str, Any]:
    """The CLI in a child: its output, exit code and (``watch``) the sockets its process tree listened on."""
    proc = subprocess.Popen([sys.executable, "-m", "studies.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    chunks: list[bytes] = []
    start = time.monotonic()
    reader = threading.Thread(target=lambda: chunks.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    sockets: set[tuple[str, str, int]] = set()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        if watch:
            sockets |= _listening(root)
        time.sleep(0.3)
    reader.join(timeout=30)
    return {"rc": proc.returncode, "out": b"".join(chunks).decode(errors="replace"), "sockets": sockets,
            "seconds": time.monotonic() - start}


@pytest.fixture(scope="module")
def runs(server: LocalMlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One launch, one resume and one failing leaderboard, with the folders they wrote."""
    work = tmp_path_factory.mktemp("security")
    ray_tmp = Path(tempfile.mkdtemp(prefix="ctsec", dir="/tmp"))  # short: Ray's socket paths have a length cap
    study = work / "sec.yaml"
    study.write_text(yaml.safe_dump(tiny_study(  # the URI with its password in the study file and the environment
        name="sec", num_trials=1, max_epochs=1, dataset={"limit": 80}, tracking={"tracking_uri": _uri(server)},
        resources={"cpus_per_trial": 1, "max_concurrent_trials": 1})))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "RAY_ADDRESS"))}
    base.update(PYTHONPATH=str(ROOT), RAY_TMPDIR=str(ray_tmp), OMP_NUM_THREADS="1")
    credentials = {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": PASSWORD}
    root = work / "chemtune-runs"
    launched = _run(["launch", str(study), "--root", str(root)],
                    {**base, **credentials, "MLFLOW_TRACKING_URI": _uri(server)}, watch=True)
    resumed = _run(["resume", "sec", "--root", str(root)], {**base, **credentials})
    board = _run(["leaderboard", "no-such-study", "--tracking-uri", _uri(server), "--root", str(root)], base)
    yield {"launch": launched, "resume": resumed, "leaderboard": board, "root": root, "ray": ray_tmp}
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_launch_resume_and_leaderboard_work_with_the_password_moved_out_of_the_uri(runs: dict[str, Any],
                                                                                   server: LocalMlflowServer) -> None:
    assert runs["launch"]["rc"] == 0, runs["launch"]["out"][-3000:]
    assert runs["resume"]["rc"] == 0, runs["resume"]["out"][-3000:]  # the password came from the environment only
    board = runs["leaderboard"]
    lines = [line for line in board["out"].splitlines() if line.strip()]
    assert board["rc"] == 2 and len(lines) == 1 and "no study named 'no-such-study'" in lines[0], board["out"]
    assert f"http://{USER}:***@127.0.0.1:{server.port}" in lines[0] or f"127.0.0.1:{server.port}" in lines[0]
    import json

    state = json.loads((runs["root"] / "studies" / "sec.json").read_text())
    assert state["tracking_uri"] == f"http://127.0.0.1:{server.port}"  # reconnects through MLflow's variables
    from mlflow.tracking import MlflowClient

    os.environ.update(MLFLOW_TRACKING_USERNAME=USER, MLFLOW_TRACKING_PASSWORD=PASSWORD)
    try:  # the runs really went to the authenticated server
        client = MlflowClient(server.url)
        experiment = client.get_experiment_by_name("sec")
        assert experiment is not None and len(client.search_runs([experiment.experiment_id])) >= 2
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME")
        os.environ.pop("MLFLOW_TRACKING_PASSWORD")


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]


def test_no_password_on_the_terminal_or_in_any_file(runs: dict[str, Any], server: LocalMlflowServer) -> None:
    needles = {PASSWORD.encode(), quote(PASSWORD, safe="").encode(), quote(PASSWORD).encode()}
    output = "".join(runs[k]["out"] for k in ("launch", "resume", "leaderboard"))
    # MLflow's own "View run ... at: http://..." lines were let through, with the URI but not the password
    view = [line for line in output.splitlines() if "View run" in line]
    assert view and all(f"http://127.0.0.1:{server.port}/" in line for line in view), view[:3]
    assert not [n for n in needles if n in output.encode()]
    sessions = [p for p in runs["ray"].rglob("session_*") if p.is_dir()]
    assert sessions, f"no Ray session folder under {runs['ray']}: RAY_TMPDIR was not honoured"
    folders = {"runs folder": runs["root"], "Ray session folder": runs["ray"], "MLflow server store": server.root}
    scanned, hits = 0, []
    for what, folder in folders.items():
        for path in _files(folder):
            data = path.read_bytes()
            scanned += 1
            hits += [f"{what}: {path}" for n in needles if n in data]
    assert scanned > 20 and not hits, hits
    print(f"scanned {scanned} files and {len(output):,} characters of output: 0 hits; "
          + ", ".join(f"{k} {runs[k]['seconds']:.0f} s" for k in ("launch", "resume", "leaderboard")))


def test_files_chemtune_writes_are_private(runs: dict[str, Any]) -> None:
    """Every file under the runs folder is 0600 (umask 077): state, saved study, Tune's experiment, checkpoints."""
    files = _files(runs["root"])
    assert any(p.name == "tuner.pkl" for p in files) and (runs["root"] / "studies" / "sec.json") in files
    loose = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in files if p.stat().st_mode & 0o077}
    assert not loose, loose
    folders = [p for p in runs["root"].rglob("*") if p.is_dir()]
    assert not [p for p in folders if p.stat().st_mode & 0o002], "a world-writable folder"


def test_every_listening_socket_of_an_embedded_launch_is_loopback(runs: dict[str, Any]) -> None:
    sockets = runs["launch"]["sockets"]
    names = {name for name, _, _ in sockets}
    assert {"gcs_server", "raylet"} <= names, names  # the sampling saw Ray's own processes
    public = []
    for name, address, port in sorted(sockets):
        ip = ipaddress.ip_address(address)
        mapped = getattr(ip, "ipv4_mapped", None)
        if not (ip.is_loopback or (mapped is not None and mapped.is_loopback)):
            public.append(f"{name} {address}:{port}")
    print(f"{len(sockets)} listening sockets, processes: {sorted(names)}")
    assert not public, public
