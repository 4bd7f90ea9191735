"""A study's pretraining stage: ``model.pretrain`` names a pretrain study file whose best checkpoint becomes
the study's ``model.path``; the checkpoint is cached by content hash (corpus hash + the pretrain study's
configuration), so the first ``launch`` pretrains it and every later study (any name, any store) reuses it.

``validate`` says whether the checkpoint is cached (:func:`plan_stage`); ``launch`` runs the pretrain study
first when it is not (:func:`use_pretrained`); a pretrain study launched on its own fills the cache too
(:func:`publish`). The cached folder is the best trial's transformers folder, fetched from MLflow.

One build per stage: processes on one machine (one cache folder) take a file lock on the stage's folder, so
the first builds and the others wait and find it cached; processes of one ``launch --join`` on several
machines also claim the build in their shared Optuna storage (:func:`studies.join.build_once`), and the
others fetch the builder's checkpoint from the shared MLflow store (:func:`fetch_stage`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import yaml
from filelock import FileLock

from studies.results import leaderboard
from studies.spec import StudySpec, load_study, parse_study
from studies.store import StudyPaths, tracking_uri_scope
from trainables import TASKS, Prepared
from trainables.cache import cache_dir
from trainables.errors import StudyError
from trainables.io import atomic_dir

__all__ = ["Stage", "Shared", "stage_key", "checkpoint_dir", "plan_stage", "publish", "fetch_stage", "ensure_stage",
           "use_pretrained", "STAGE_JSON"]

STAGE_JSON = "chemtune_stage.json"  # in a cached checkpoint: the key, the study and the trial it came from

# How processes on several machines build a stage once (``launch --join``: studies.join.build_once bound to the
# shared Optuna storage): (claim name, build -> what to share, fetch(what was shared)).
Shared = Callable[[str, Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None]], None]


@dataclass
class Stage:
    """A planned stage (pretraining, or a teacher: ``studies.teaching``): the stage study, its prepared data,
    and where its checkpoint is cached."""

    file: str
    spec: StudySpec
    prepared: Prepared
    key: str
    folder: Path

    @property
    def cached(self) -> bool:
        return (self.folder / STAGE_JSON).is_file()


def stage_key(spec: StudySpec, corpus_hash: str) -> str:
    """The checkpoint's content hash: the corpus and everything in the study that shapes the weights
    (not its name, store or resources)."""
    what = spec.model_dump(mode="json", exclude={"name", "tracking", "resources"})
    blob = json.dumps({"corpus": corpus_hash, "study": what}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def checkpoint_dir(spec: StudySpec, key: str) -> Path:
    """``<chemtune cache>/pretrained/<study name>-<key>``."""
    return cache_dir() / "pretrained" / f"{spec.name}-{key}"


def _pretrain_spec(study: StudySpec) -> StudySpec:
    file = study.model.pretrain
    assert file is not None
    spec = load_study(file)
    if spec.task != "pretrain":
        raise StudyError(f"model.pretrain: {file} is a {spec.task!r} study, not a pretrain study")
    if spec.model.name != study.model.name:
        raise StudyError(f"model.pretrain: {file} pretrains {spec.model.name!r} but this study's model.name is "
                         f"{study.model.name!r}; name the same model")
    if spec.model.max_length > study.model.max_length:
        raise StudyError(f"model.pretrain: {file} pretrains with max_length {spec.model.max_length}, longer than "
                         f"this study's model.max_length {study.model.max_length}")
    return spec


def plan_stage(study: StudySpec, tracking_uri: str | None = None) -> Stage | None:
    """The stage ``study`` names (its corpus prepared, bad data raising), or ``None`` without one."""
    if not study.model.pretrain:
        return None
    spec = _pretrain_spec(study)
    with tracking_uri_scope(tracking_uri) if tracking_uri else nullcontext():
        prepared = TASKS.get("pretrain").prepare(spec)
    key = stage_key(spec, prepared.tags["chemtune.corpus_hash"])
    return Stage(study.model.pretrain, spec, prepared, key, checkpoint_dir(spec, key))


def publish(spec: StudySpec, prepared: Prepared, tracking_uri: str, folder: Path | None = None) -> Path:
    """Copy the best complete trial's checkpoint of stage study ``spec`` into the cache (``folder``, by default
    the pretrain study's :func:`checkpoint_dir`); the folder."""
    folder = folder or checkpoint_dir(spec, stage_key(spec, prepared.tags["chemtune.corpus_hash"]))
    board = leaderboard(spec.name, tracking_uri)
    done = board[(board["role"] == "trial") & (board["state"] == "complete") & board["model_uri"].notna()] \
        if not board.empty else board
    if done.empty:
        raise StudyError(f"{spec.task} study {spec.name!r} has no complete trial with a logged checkpoint; "
                         f"`chemtune resume {spec.name}` (or launch it with --restart) to finish it")
    best = done.iloc[0]
    metrics = {k: float(best[k]) for k in best.index if str(k).startswith(("valid_", "test_"))
               and isinstance(best[k], (int, float))}
    _fill(folder, {"key": folder.name.rsplit("-", 1)[-1], "study": spec.name, "run_id": str(best["run_id"]),
                   "model_uri": str(best["model_uri"]), "tracking_uri": tracking_uri, "metric": spec.metric,
                   "metrics": metrics})
    return folder


def _fill(folder: Path, info: dict[str, Any]) -> None:
    """Download the checkpoint ``info["model_uri"]`` (a logged chemtune model) from ``info["tracking_uri"]`` into
    ``folder``, with ``info`` as its :data:`STAGE_JSON`; atomically (a reader never sees half a folder)."""
    with tempfile.TemporaryDirectory(prefix="chemtune-stage-") as tmp, tracking_uri_scope(info["tracking_uri"]):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=info["model_uri"], dst_path=tmp))
        with atomic_dir(folder) as out:
            shutil.copytree(local / "artifacts" / "model", out, dirs_exist_ok=True)
            (out / STAGE_JSON).write_text(json.dumps(info, indent=1))


def fetch_stage(stage: Stage, info: dict[str, Any], where: str) -> None:
    """Cache the checkpoint another process built (``info``: its :data:`STAGE_JSON`), from its MLflow store;
    nothing when the builder wrote it here (a cache folder shared across machines)."""
    if stage.cached:
        return
    if info.get("key") != stage.key:  # the claim is named by the key: a mismatch is a bug, not bad input
        raise StudyError(f"{where}: the shared {stage.spec.task} stage names key {info.get('key')!r}, not {stage.key!r}")
    try:
        _fill(stage.folder, info)
    except Exception as err:  # noqa: BLE001 - any store error: say where the checkpoint was and what to do
        raise StudyError(
            f"{where}: could not fetch the {stage.spec.task} stage's checkpoint {info.get('model_uri')} (built by "
            f"another joined process) from {info.get('tracking_uri')}: {str(err).splitlines()[0][:300]}; every "
            "joined process needs that MLflow store and its artifacts, or share CHEMTUNE_CACHE") from err


def ensure_stage(stage: Stage, paths: StudyPaths, tracking_uri: str, run: Callable[[StudySpec], Any],
                 key_of: Callable[[StudySpec], str], where: str, shared: Shared | None = None) -> None:
    """Fill the stage's cache: from its study launched before from this store (same configuration: ``key_of``
    its saved copy is the stage's key), else by running it (``run``, the study's launch) and publishing its
    best checkpoint. ``where`` names the study file's key (``model.pretrain``) in errors.

    Built once: a file lock on the cached folder (``<cache>/locks/``) makes other processes using this cache wait and then find
    it cached (the OS drops the lock of a killed builder); with ``shared`` (``launch --join``) the build is also
    claimed across machines, and a process that does not build fetches the builder's checkpoint.
    """
    if stage.cached:
        return
    # <cache>/locks/pretrained/<name>.lock: beside the cache's folders, so theirs hold checkpoints only
    lock = stage.folder.parent.parent / "locks" / stage.folder.parent.name / f"{stage.folder.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock):  # no timeout: a pretraining run takes as long as it takes
        if stage.cached:
            return
        if shared is None:
            _build(stage, paths, tracking_uri, run, key_of, where)
            return

        def build() -> dict[str, Any]:
            _build(stage, paths, tracking_uri, run, key_of, where)
            return json.loads((stage.folder / STAGE_JSON).read_text())

        shared(f"{stage.folder.parent.name}/{stage.folder.name}", build, lambda info: fetch_stage(stage, info, where))


def _build(stage: Stage, paths: StudyPaths, tracking_uri: str, run: Callable[[StudySpec], Any],
           key_of: Callable[[StudySpec], str], where: str) -> None:
    if paths.state_file(stage.spec.name).exists():
        file = paths.study_file(stage.spec.name)
        stored = parse_study(yaml.safe_load(file.read_text()), str(file))
        if key_of(stored) != stage.key:
            raise StudyError(f"{where}: {stage.spec.task} study {stage.spec.name!r} was launched before from "
                             f"{paths.root} with another configuration; `chemtune launch {stage.file} --restart` "
                             "to run this one")
        publish(stage.spec, stage.prepared, tracking_uri, stage.folder)
    else:
        result = run(stage.spec)  # launch publishes a pretrain study's checkpoint itself
        if not stage.cached:
            publish(stage.spec, stage.prepared, getattr(result, "tracking_uri", None) or tracking_uri, stage.folder)
    if not stage.cached:
        raise StudyError(f"{where}: {stage.spec.task} study {stage.spec.name!r} left no checkpoint in {stage.folder}")


def use_pretrained(study: StudySpec, tracking_uri: str, paths: StudyPaths,
                   run: Callable[[StudySpec], Any], shared: Shared | None = None) -> StudySpec:
    """``study`` with ``model.path`` = its stage's checkpoint, pretraining it first (``run``) when not cached.

    The stage's study runs in the same store as ``study`` (its own MLflow experiment and Optuna study);
    the returned study names the cached folder, so resuming it never pretrains again. ``shared``: see
    :func:`ensure_stage`.
    """
    stage = plan_stage(study, tracking_uri)
    if stage is None:
        return study
    corpus = stage.prepared.tags["chemtune.corpus_hash"]
    ensure_stage(stage, paths, tracking_uri, run, lambda stored: stage_key(stored, corpus), "model.pretrain", shared)
    model = study.model.model_copy(update={"path": str(stage.folder), "pretrain": None})
    return study.model_copy(update={"model": model})
