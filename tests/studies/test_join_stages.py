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
import yaml

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


def test_a_failed_build_reaches_every_waiter_and_the_next_launch_builds_again(tmp_path: Path, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    waiting = threading.Event()
    wait_claim = join._wait_claim

    def waiter(*args: Any, **kw: Any) -> Any:  # the other joiner started (its `since` is set) and now waits
        waiting.set()
        return wait_claim(*args, **kw)

    monkeypatch.setattr(join, "_wait_claim", waiter)

    def broken() -> dict[str, Any]:
        # fail only once the other joiner waits: a joiner that starts after a recorded failure takes it for an
        # earlier launch's and builds again (a fixed sleep here raced on loaded CI workers)
        assert waiting.wait(30), "the other joiner never waited for the claim"
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


def test_a_joined_launch_claims_the_teacher_stage_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``options.teacher_study`` goes through the same claim as ``model.pretrain`` (studies/teaching.py)."""
    from studies.pretraining import STAGE_JSON
    from studies.spec import parse_study
    from studies.store import StudyPaths
    from studies.teaching import plan_teacher, use_teacher
    from tests.studies.test_teacher_stage import _student

    monkeypatch.setattr("studies.teaching.cache_dir", lambda: tmp_path / "cache")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = parse_study(_student())
    expected = plan_teacher(study)
    built: list[str] = []

    def run(stage):  # noqa: ANN001, ANN202 - the teacher study's launch, which publishes its checkpoint
        built.append(stage.name)
        expected.folder.mkdir(parents=True)
        (expected.folder / STAGE_JSON).write_text(json.dumps({"key": expected.key, "run_id": "t1"}))

    def shared(name, build, fetch):  # noqa: ANN001, ANN202 - runner._launch_joined's, on a test database
        join.build_once(url, name, build, fetch, **FAST)

    student = use_teacher(study, "sqlite:///unused.db", StudyPaths.default(tmp_path / "home"), run, shared)
    assert student.options["teacher_uri"] == str(expected.folder)
    assert built == [f"teacher-tiny-bart-smoke-{expected.key[:8]}"]  # built once, through the claim
    claim = f"{join.STAGE_PREFIX}teachers/teacher-tiny-bart-smoke-{expected.key}.0"
    assert list(_claims(url)) == [claim] and _claims(url)[claim]["ready"] == {"key": expected.key, "run_id": "t1"}


# -- end to end: two `chemtune launch --join` processes, each its own store folder and (empty) cache, as on two
# machines sharing only the Optuna and MLflow stores ---------------------------------------------------------

def _launch_joined(tmp_path: Path, stage: Path, name: str, env: dict[str, str] | None = None,
                   timeout: float = 900) -> tuple[list[int], list[str], Path]:
    from tests.conftest import _shared_data

    shared = tmp_path / "shared"  # the stores every joiner reaches; MLflow's artifacts land in ./mlruns here
    shared.mkdir(exist_ok=True)
    study = {"name": name, "task": "retro", "search_space": "retro", "metric": "valid_top1",
             "dataset": {"name": "uspto50k", "limit": 16, "split": "random"},
             "model": {"name": "tiny-bart", "pretrain": str(stage), "max_length": 64},
             "fixed": {"gamma": 0, "treatment": "fix_encoder", "batch_size": 16},  # needs a pretrained model
             "num_trials": 2, "max_epochs": 1, "options": {"val_subset": 2, "test_limit": 2, "eval_batch_size": 16},
             "resources": {"cpus_per_trial": 1},
             "tracking": {"tracking_uri": f"sqlite:///{shared / 'mlflow.db'}",
                          "optuna_storage": f"sqlite:///{shared / 'optuna.db'}"}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    base = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    procs, logs = [], []
    for i in range(2):
        logs.append(tmp_path / f"joiner{i}.log")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "studies.cli", "launch", str(path), "--join", "--trials", "1",
             "--root", str(tmp_path / f"home{i}")], cwd=shared, stdout=logs[-1].open("wb"), stderr=subprocess.STDOUT,
            env={**base, **(env or {}), "PYTHONPATH": str(ROOT), "CHEMTUNE_DATA_DIR": str(_shared_data()),
                 "CHEMTUNE_CACHE": str(tmp_path / f"cache{i}")}, start_new_session=True))
    codes = []
    try:
        for proc in procs:
            codes.append(proc.wait(timeout))
    finally:
        for proc in procs:  # only what this test started, by its process group
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait(30)
    return codes, [log.read_text(errors="replace") for log in logs], shared


def _runs(uri: str, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


@pytest.mark.slow
def test_two_joined_processes_pretrain_once_and_run_on_the_same_checkpoint(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from studies.store import StudyPaths

    codes, logs, shared = _launch_joined(tmp_path, ROOT / "studies" / "pretrain_tiny_bart_smoke.yaml", "join-staged")
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    uri = f"sqlite:///{shared / 'mlflow.db'}"
    pretrain = [r for r in _runs(uri, "pretrain-tiny-bart-smoke") if r.data.tags.get("chemtune.role") == "trial"]
    assert len(pretrain) == 1  # built once, by one joiner
    # each joiner cached the same checkpoint (same key, same trial run, same weights): one built, one fetched
    (a,), (b,) = [list((tmp_path / f"cache{i}" / "pretrained").iterdir()) for i in (0, 1)]
    assert a.name == b.name
    stages = [json.loads((f / "chemtune_stage.json").read_text()) for f in (a, b)]
    assert stages[0] == stages[1] and stages[0]["run_id"] == pretrain[0].info.run_id
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)
    for i, folder in enumerate((a, b)):  # what each joiner's trials ran with
        saved = yaml.safe_load(StudyPaths.default(tmp_path / f"home{i}").study_file("join-staged").read_text())
        assert saved["model"]["path"] == str(folder) and saved["model"]["pretrain"] is None
    claim = f"{join.STAGE_PREFIX}pretrained/{a.name}.0"  # claimed once, built, shared; never taken over
    claims = _claims(f"sqlite:///{shared / 'optuna.db'}")
    assert list(claims) == [claim] and claims[claim]["ready"] == stages[0]
    # the study finished with all its trials, one per joiner, under one parent run
    runs = _runs(uri, "join-staged")
    (parent,) = [r for r in runs if r.data.tags.get("chemtune.role") == "study"]
    trials = [r for r in runs if r.data.tags.get("chemtune.role") == "trial"]
    assert parent.info.status == "FINISHED" and parent.data.params["model.path"] in (str(a), str(b))
    assert sorted(r.info.status for r in trials) == ["FINISHED", "FINISHED"]
    assert len({r.data.tags["chemtune.joiner"] for r in trials}) == 2
    study = optuna.load_study(study_name="join-staged", storage=f"sqlite:///{shared / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]


@pytest.mark.slow
def test_a_failed_stage_build_stops_every_joiner_clearly_and_leaves_no_run_running(tmp_path: Path) -> None:
    stage = yaml.safe_load((ROOT / "studies" / "pretrain_tiny_bart_smoke.yaml").read_text())
    stage.update(name="pretrain-broken", max_failures=0)
    stage_file = tmp_path / "pretrain_broken.yaml"
    stage_file.write_text(yaml.safe_dump(stage))
    faults = json.dumps([{"kind": "raise", "epoch": "any", "times": 5, "id": "stage"}])  # every pretrain trial fails
    codes, logs, shared = _launch_joined(tmp_path, stage_file, "join-broken", timeout=600,
                                         env={"CHEMTUNE_FAULTS": faults, "CHEMTUNE_FAULTS_STATE": str(tmp_path / "f")})
    text = "\n".join(log[-3000:] for log in logs)
    assert codes == [2, 2], text  # a user error (one line), not a crash
    flat = [" ".join(log.split()) for log in logs]  # the console wraps long lines
    builder = "pretrain study 'pretrain-broken' has no complete trial with a logged checkpoint"
    assert sum(f"error: {builder}" in log for log in flat) == 1, text
    waiter = [log for log in flat if "its build failed in another joined process" in log]
    assert len(waiter) == 1 and builder in waiter[0], text  # the waiter names the builder's error
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{shared / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and not [r for r in runs if r.info.status == "RUNNING"]  # the stage's runs ended, none RUNNING
    assert not _runs(f"sqlite:///{shared / 'mlflow.db'}", "join-broken")  # nobody joined a study with no checkpoint
    names = [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{shared / 'optuna.db'}")]
    assert "join-broken" not in names and len(names) == 1  # only the stage's claim, marked failed
