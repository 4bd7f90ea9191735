"""The one redaction rule and the credential move, unit by unit (the end-to-end scan is test_no_leaks.py)."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest

from studies import redact
from studies.redact import RedactingStream, adopt_credentials, split_credentials


def test_an_http_uri_gives_its_credentials_to_mlflows_variables() -> None:
    env: dict[str, str] = {"MLFLOW_TRACKING_PASSWORD": "older"}
    assert adopt_credentials("http://al%40ice:p%40ss%2Fw@127.0.0.1:5000/x?y=1", env) == "http://127.0.0.1:5000/x?y=1"
    assert env == {"MLFLOW_TRACKING_USERNAME": "al@ice", "MLFLOW_TRACKING_PASSWORD": "p@ss/w"}  # the URI's wins
    assert adopt_credentials("https://127.0.0.1:5000", env) == "https://127.0.0.1:5000"
    assert env["MLFLOW_TRACKING_PASSWORD"] == "p@ss/w"  # a URI without one leaves the variables alone
    db = "postgresql+psycopg2://me:dbsecret1@h:5432/optuna"
    assert adopt_credentials(db, env) == db  # SQLAlchemy has nowhere else to read it: kept, redacted on output
    assert split_credentials("sqlite:////tmp/x.db") == ("sqlite:////tmp/x.db", None, None)


def test_redact_blanks_uri_passwords_and_secret_values(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"MLFLOW_TRACKING_PASSWORD": "hunter2hunter2", "SOME_API_KEY": "k3y-value-123", "SHORT_TOKEN": "ab",
           "HOME": "/home/hunter2hunter2x"}
    text = "x http://u:zzz@h/ y hunter2hunter2 z k3y-value-123 ab"
    assert redact.redact(text, env) == "x http://u:***@h/ y *** z *** ab"
    assert redact.redact("p%40ss%2Fword99", {"DB_PASSWORD": "p@ss/word99"}) == "***"  # URL-encoded form too


def test_the_redacting_stream_and_guard_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://bob:s3cr3t-pass@127.0.0.1:5005")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    argv = ["chemtune", "leaderboard", "x", "--tracking-uri", "http://bob:argv-pass-9@h:1"]
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    import sys

    before = os.umask(0o022)
    try:
        restore = redact.guard_process(argv)
        assert os.umask(0o077) == 0o077 and isinstance(sys.stdout, RedactingStream)  # what guard_process set
        print("View run at http://127.0.0.1:5005 s3cr3t-pass argv-pass-9")
        sys.stderr.write("Traceback ... http://bob:s3cr3t-pass@127.0.0.1:5005\n")
        (tmp_path / "f").write_text("x")
        assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o600
        restore()
        assert os.umask(0o022) == 0o022 and sys.stdout is out and sys.stderr is err  # an in-process call's own again
    finally:
        os.umask(before)
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5005"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cr3t-pass"
    assert argv[-1] == "http://bob:***@h:1"  # what Ray would record as the entrypoint
    assert "s3cr3t" not in out.getvalue() + err.getvalue() and "argv-pass" not in out.getvalue()
    assert out.getvalue().count("***") == 2 and "http://bob:***@127.0.0.1:5005" in err.getvalue()


def test_resume_moves_an_old_states_password_out_and_reads_it_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from studies.runner import _read_state
    from studies.store import StudyPaths

    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    paths = StudyPaths.default(tmp_path)
    paths.state_file("old").parent.mkdir(parents=True)
    paths.state_file("old").write_text(json.dumps({"tracking_uri": "http://u:old-pass-77@h:1", "parent_run_id": "r"}))
    state = _read_state(paths, "old")
    assert state["tracking_uri"] == "http://h:1" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "old-pass-77"
    assert "old-pass-77" not in paths.state_file("old").read_text()
    assert stat.S_IMODE(paths.state_file("old").stat().st_mode) == 0o600
    paths.state_file("old").write_text("{not json")
    with pytest.raises(ValueError, match=r"old.json: not a chemtune study state"):
        _read_state(paths, "old")


def test_the_loopback_switch_is_scoped_to_the_embedded_rays_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray._private import ray_constants, services

    from studies.runner import _LOCAL_ONLY, _loopback_only

    monkeypatch.delenv(_LOCAL_ONLY, raising=False)
    before = ray_constants.ENABLE_RAY_CLUSTER
    with _loopback_only():
        assert os.environ[_LOCAL_ONLY] == "0" and services.get_node_ip_address() == "127.0.0.1"
    assert _LOCAL_ONLY not in os.environ and ray_constants.ENABLE_RAY_CLUSTER == before
