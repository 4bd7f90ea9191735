"""A retro study's teacher stage: ``options.teacher_study`` names a retro study file that chemtune trains on a
seeded share of the train products (``options.teacher_share``); the student trains on the other products,
labelled by the teacher's predictions on products it never saw.

Why a disjoint share: a teacher trained on the student's own rows would relabel the rows it was trained on and
echo their training labels back (self-distillation, close to the gold labels), not give predictions on unseen
products as an LLM teacher does. The split is seeded (``dataset.seed``) and disjoint by product
(:func:`trainables.retro.teacher.split_for_teacher`).

The stage works like the pretraining stage (:mod:`studies.pretraining`): its best checkpoint is cached by
content hash (the teacher study's configuration, its pretraining stage's key, the share and the data's split
hashes); ``validate`` says whether it is cached (:func:`plan_teacher`); ``launch`` trains it first when not
(:func:`use_teacher`), then the student study reads the cached folder as ``options.teacher_uri``
(:func:`with_teacher`): its labels come through :func:`trainables.retro.teacher.teacher_from_model`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from studies.pretraining import Shared, Stage, ensure_stage, plan_stage, stage_key
from studies.spec import StudySpec, load_study
from studies.store import StudyPaths, tracking_uri_scope
from trainables import TASKS
from trainables.cache import cache_dir
from trainables.errors import StudyError

__all__ = ["plan_teacher", "teacher_stage_spec", "teacher_key", "with_teacher", "use_teacher"]

WHERE = "options.teacher_study"


def _options(study: StudySpec) -> Any:
    from trainables.retro.task import parse_options  # the retro task (torch) loads only for a retro study

    return parse_options(study.options)


def teacher_stage_spec(study: StudySpec) -> StudySpec | None:
    """The teacher stage's study: the file ``options.teacher_study`` names, trained on the teacher's share of
    ``study``'s train split (``options.train_part``); ``None`` without a teacher stage."""
    if study.task != "retro":
        return None
    opts = _options(study)
    file = opts.teacher_study
    if not file:
        return None
    spec = load_study(file)
    if spec.task != "retro":
        raise StudyError(f"{WHERE}: {file} is a {spec.task!r} study, not a retro study; a teacher stage is a retro "
                         "study (products in, reactants out) trained on a share of this study's train split")
    own = _options(spec)
    from trainables.retro.task import TEACHERS

    theirs = [f"options.{k}" for k in (*TEACHERS, "train_part") if getattr(own, k)]
    if theirs:
        raise StudyError(f"{WHERE}: {file} sets {', '.join(theirs)}; a teacher stage trains on the true labels of "
                         "its share alone (no teacher of its own)")
    if spec.dataset != study.dataset:
        raise StudyError(f"{WHERE}: {file} reads dataset {spec.dataset.model_dump(exclude_defaults=True)} but this "
                         f"study reads {study.dataset.model_dump(exclude_defaults=True)}; the teacher trains on a share "
                         "of this study's train split: give both the same dataset section")
    part = {"side": "teacher", "share": opts.teacher_share}
    return spec.model_copy(update={"options": {**spec.options, "train_part": part}})


def teacher_key(spec: StudySpec, split_hashes: dict[str, str], tracking_uri: str | None = None) -> str:
    """The teacher checkpoint's content hash: the stage study's configuration (its share included), its data
    (the split hashes of its share, valid and test) and its pretraining stage's key in place of that file's path
    (a moved checkout keeps its cache)."""
    pretrain = plan_stage(spec, tracking_uri) if spec.model.pretrain else None
    keyed = spec if pretrain is None else spec.model_copy(
        update={"model": spec.model.model_copy(update={"pretrain": f"stage:{pretrain.key}"})})
    return stage_key(keyed, json.dumps(split_hashes, sort_keys=True))


def plan_teacher(study: StudySpec, tracking_uri: str | None = None) -> Stage | None:
    """The teacher stage ``study`` names (its share prepared, bad data or a bad stage file raising), or ``None``.

    The returned stage's study is named ``<teacher study>-<key[:8]>``: each configuration (another share,
    another dataset) is its own study in the store, so none is refused as "launched before".
    """
    spec = teacher_stage_spec(study)
    if spec is None:
        return None
    with tracking_uri_scope(tracking_uri) if tracking_uri else nullcontext():
        prepared = TASKS.get("retro").prepare(spec)
    hashes = {k: v for k, v in prepared.tags.items() if k.startswith("split_hash.")}
    key = teacher_key(spec, hashes, tracking_uri)
    folder = cache_dir() / "teachers" / f"{spec.name}-{key}"
    named = spec.model_copy(update={"name": f"{spec.name}-{key[:8]}"})
    return Stage(_options(study).teacher_study, named, prepared, key, folder)


def with_teacher(study: StudySpec, stage: Stage) -> StudySpec:
    """``study`` reading the cached teacher: ``options.teacher_uri`` = the stage's folder, trained on the
    student's share (``options.train_part``); the returned study never trains the teacher again (resume)."""
    options = {k: v for k, v in study.options.items() if k not in ("teacher_study", "teacher_share")}
    share = stage.spec.options["train_part"]["share"]
    options.update(teacher_uri=str(stage.folder), train_part={"side": "student", "share": share})
    return study.model_copy(update={"options": options})


def use_teacher(study: StudySpec, tracking_uri: str, paths: StudyPaths,
                run: Callable[[StudySpec], Any], shared: Shared | None = None) -> StudySpec:
    """``study`` with its teacher stage's checkpoint as its teacher, training the teacher first (``run``: the
    stage study's launch, its own pretraining stage included) when it is not cached; built once across the
    processes of a ``launch --join`` with ``shared`` (:func:`studies.pretraining.ensure_stage`)."""
    stage = plan_teacher(study, tracking_uri)
    if stage is None:
        return study
    # the stage study's name carries its key: one of that name launched before from this store is this one
    ensure_stage(stage, paths, tracking_uri, run, lambda stored: stage.key, WHERE, shared)
    return with_teacher(study, stage)
