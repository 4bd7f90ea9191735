"""A study's stages under ``launch --join``, without Ray: the build claim in the shared Optuna storage (one
builder, the others fetch what it shared; a failure reaches every waiter; a dead builder or an earlier
launch's failure is built again) and the file lock that makes processes sharing one cache folder build a stage
once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from studies import join
from tests.conftest import ROOT
from tests.faults.test_fault_units import _dead_lease
from trainables.errors import StudyError

FAST = {"poll": 0.05, "beat": 0.1}


def _race(url: str, n: int, build, **kw: Any) -> tuple[list[Any], list[BaseException]]:
    """``n`` joiners call :func:`join.build_once` at once (threads: the claim is in the database, not the process)."""
    fetched: list[Any] = []
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def one() -> None:
        start.wait()
        try:
            join.build_once(url, "pretrained/stage-abc", build, fetched.append, **{**FAST, **kw})
        except BaseException as err:  # noqa: BLE001 - collected for the assertions
            errors.append(err)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return fetched, errors


def _claims(url: str) -> dict[str, dict[str, Any]]:
    return {s.study_name: s.user_attrs for s in optuna.get_all_study_summaries(url)
            if s.study_name.startswith(join.STAGE_PREFIX)}


def test_one_joiner_builds_a_stage_and_the_others_fetch_what_it_shared(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    builds: list[int] = []

    def build() -> dict[str, Any]:
        builds.append(1)
        time.sleep(0.5)  # the others find the claim taken and wait, beating meanwhile
        return {"key": "abc", "run_id": "r1"}

    fetched, errors = _race(url, 3, build)
    assert errors == [] and len(builds) == 1
    assert fetched == [{"key": "abc", "run_id": "r1"}] * 2
    (name, attrs), = _claims(url).items()
    assert name == "chemtune.stage.pretrained/stage-abc.0"
    assert attrs["ready"] == {"key": "abc", "run_id": "r1"} and attrs["builder"]["host"] == socket.gethostname()
    # a later joiner (the stage cached elsewhere, not here) fetches without building
    join.build_once(url, "pretrained/stage-abc", build, fetched.append, **FAST)
    assert len(builds) == 1 and len(fetched) == 3


def test_a_failed_build_reaches_every_waiter_and_the_next_launch_builds_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"

    def broken() -> dict[str, Any]:
        time.sleep(0.5)
        raise StudyError("pretrain study 'p' has no complete trial with a logged checkpoint")

    fetched, errors = _race(url, 2, broken)
    assert fetched == [] and len(errors) == 2
    messages = sorted(str(e) for e in errors)
    assert messages[0] == "pretrain study 'p' has no complete trial with a logged checkpoint"  # the builder's own
    assert messages[1].startswith("stage pretrained/stage-abc: its build failed in another joined process (on ")
    assert "no complete trial with a logged checkpoint; fix that and launch the joined processes again" in messages[1]
    # launched again (after the fix): the earlier failure is not raised, attempt 1 is claimed and built
    fetched, errors = _race(url, 2, lambda: {"key": "abc"})
    assert errors == [] and fetched == [{"key": "abc"}]
    claims = _claims(url)
    assert sorted(claims) == ["chemtune.stage.pretrained/stage-abc.0", "chemtune.stage.pretrained/stage-abc.1"]
    assert "failed" in claims["chemtune.stage.pretrained/stage-abc.0"]
    assert claims["chemtune.stage.pretrained/stage-abc.1"]["ready"] == {"key": "abc"}


@pytest.mark.parametrize("builder", ["dead on this host", "silent on another host"])
def test_a_gone_builder_is_taken_over(tmp_path: Path, builder: str) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    claim = optuna.create_study(study_name=join.STAGE_PREFIX + "pretrained/stage-abc.0", storage=url)
    if builder == "dead on this host":  # its process was killed mid-build: the OS says so
        claim.set_user_attr("builder", {**_dead_lease(), "beat": time.time()})
    else:  # another host cannot be asked: its heartbeat stopped longer than `stale` ago
        claim.set_user_attr("builder", {"host": "elsewhere", "pid": 1, "create_time": 0.0, "beat": time.time() - 5})
    fetched: list[Any] = []
    join.build_once(url, "pretrained/stage-abc", lambda: {"key": "abc"}, fetched.append, stale=2.0, **FAST)
    assert fetched == []  # it built (attempt 1), it did not fetch
    assert _claims(url)[join.STAGE_PREFIX + "pretrained/stage-abc.1"]["ready"] == {"key": "abc"}


def test_a_builder_on_another_host_that_still_beats_is_waited_for(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    claim = optuna.create_study(study_name=join.STAGE_PREFIX + "pretrained/stage-abc.0", storage=url)
    remote = {"host": "elsewhere", "pid": 1, "create_time": 0.0}

    def remote_builder() -> None:  # beats for 1.5 s (longer than `stale`), then shares its checkpoint
        for _ in range(6):
            claim.set_user_attr("builder", {**remote, "beat": time.time()})
            time.sleep(0.25)
        claim.set_user_attr("ready", {"key": "abc", "run_id": "remote"})

    thread = threading.Thread(target=remote_builder)
    thread.start()
    fetched: list[Any] = []
    join.build_once(url, "pretrained/stage-abc", lambda: pytest.fail("built twice"), fetched.append,
                    stale=1.0, **FAST)
    thread.join(30)
    assert fetched == [{"key": "abc", "run_id": "remote"}]


_LOCKED_BUILD = """
import json, sys, time
from pathlib import Path
from studies.pretraining import STAGE_JSON, Stage, ensure_stage
from studies.spec import parse_study
from studies.store import StudyPaths
from tests.conftest import tiny_pretrain_study

folder, count, root = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
spec = parse_study(tiny_pretrain_study("tiny-bert", name="locked"))
stage = Stage("locked.yaml", spec, None, "abc", folder)

def run(_spec):  # a pretrain launch: slow, then its checkpoint is published into the folder
    with count.open("a") as out:
        out.write("built\\n")
    time.sleep(3)
    folder.mkdir(parents=True)
    (folder / STAGE_JSON).write_text(json.dumps({"key": "abc"}))

ensure_stage(stage, StudyPaths.default(root), "sqlite:///unused.db", run, lambda s: "abc", "model.pretrain")
print("cached" if stage.cached else "missing")
"""


def test_processes_sharing_one_cache_folder_build_a_stage_once(tmp_path: Path) -> None:
    folder, count = tmp_path / "cache" / "pretrained" / "locked-abc", tmp_path / "builds.txt"
    procs = [subprocess.Popen([sys.executable, "-c", _LOCKED_BUILD, str(folder), str(count), str(tmp_path / f"home{i}")],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o[0].strip() for o in outs] == ["cached", "cached"]
    assert count.read_text().splitlines() == ["built"]  # the second waited on the lock, then found it cached
    assert json.loads((folder / "chemtune_stage.json").read_text()) == {"key": "abc"}
