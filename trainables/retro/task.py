"""The ``retro`` task: seq2seq retrosynthesis (product -> reactants), scored by beam-search top-k.

``train_retro`` is the plain function core (no Ray needed); the study runner wraps it for Ray Tune.
Every epoch reports teacher-forced token accuracy and loss and greedy top-1 on a fixed validation
subset (``valid_*``); the last epoch adds beam-search top-1/3/5/10 and the invalid share on test.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch.utils.data import DataLoader

from trainables.base import TASKS, Prepared, Reporter, Task
from trainables.batching import length_grouped_loader, seq2seq_batch, sorted_chunks, to_device
from trainables.data.datasets import DATASETS
from trainables.errors import DataError, StudyError
from trainables.loop import EpochLoop
from trainables.methods import count_parameters
from trainables.retro.adapters import apply_treatment
from trainables.retro.data import Reactions, ReactionSplits, randomize_smiles, reactions_hash
from trainables.retro.knobs import DEFAULTS, RetroKnobs
from trainables.retro.models import SEQ2SEQ, decoder_start_id, is_random_init, load_seq2seq
from trainables.retro.predictor import generate, save_retro_model
from trainables.retro.scoring import TOPK, score_topk
from trainables.retro.teacher import (
    TeacherLabels,
    check_coverage,
    mix_labels,
    split_for_teacher,
    teacher_from_csv,
    teacher_from_model,
    teacher_top1,
)
from trainables.retro.treatments import TREATMENT_CHOICES, freeze_embeddings, needs_pretrained, validate_treatment
from trainables.schedules import lr_scheduler

if TYPE_CHECKING:
    from trainables.spec import StudySchema, TrialSpec

__all__ = ["RetroKnobs", "RetroOptions", "TrainPart", "TEACHERS", "RetroData", "RetroTrainer", "prepare_retro", "train_retro", "METRICS", "retro_pyfunc"]

METRICS = ("top1", "token_acc", "loss")


class TrainPart(BaseModel):
    """One side of the train split cut for a teacher chemtune trains itself (:func:`split_for_teacher`)."""

    model_config = ConfigDict(extra="forbid")

    side: Literal["teacher", "student"] = Field(description="teacher: the teacher stage's share; student: the rest")
    share: float = Field(gt=0, lt=1, description="share of the distinct train products the teacher trains on")


TEACHERS = ("teacher_csv", "teacher_uri", "teacher_study")


class RetroOptions(BaseModel):
    """Task options of a retro study (the study's ``options:`` section)."""

    model_config = ConfigDict(extra="forbid")

    teacher_csv: str | None = Field(
        None, description="CSV 'product,prediction' of teacher labels for gamma mixing (the way to bring an LLM's "
        "predictions, e.g. LlaSMol's top-1 on the train products); $VARS are expanded")
    teacher_uri: str | None = Field(
        None, description="MLflow model URI (models:/name/1, runs:/id/model) or a saved retro model folder, run on "
        "the train products (options.teacher_beams)")
    teacher_study: str | None = Field(
        None, description="teacher stage: a retro study file chemtune trains on a seeded share of the train products "
        "(options.teacher_share), cached by content hash (`launch` trains it first); the student trains on the rest, "
        "labelled by the teacher's predictions on products it never saw; $VARS expanded, relative to the study file")
    teacher_share: float = Field(0.5, gt=0, lt=1, description="with teacher_study: share of the distinct train "
                                 "products the teacher trains on (split seeded by dataset.seed)")
    teacher_beams: int = Field(1, ge=1, description="a model teacher's label: its first valid candidate among this "
                               "many beams (1: its greedy top-1)")
    gamma_shortfall: float = Field(
        0.0, ge=0, le=1, description="share of ALL train rows gamma may fall short by where the teacher has no usable "
        "label (they keep the true one; trials log gamma_effective); beyond it a gamma is refused")
    train_part: TrainPart | None = Field(
        None, description="train on one side of the teacher split (set by chemtune on a teacher stage and its student)")
    augment_target: bool = Field(False, description="also randomize the reactant SMILES when a row is augmented")
    beam_size: int = Field(10, ge=10, description="beam width of the final test evaluation (>= 10 for top-10)")
    dedupe_beams: bool = Field(
        False, description="rank valid top-1 on deduplicated beams; test always reports both (test_top{k}: "
        "Chemformer's protocol, no deduplication; test_top{k}_dedup)")
    allow_random_init: bool = Field(
        False, description="allow freezing a stack or LoRA on a randomly initialised model (smoke tests only)")
    val_subset: int = Field(500, ge=1, description="fixed number of validation reactions scored every epoch")
    test_limit: int | None = Field(None, ge=1, description="score only the first N test reactions (smoke runs)")
    eval_batch_size: int = Field(64, ge=1, description="products per generate call")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")

    @field_validator("teacher_csv", "teacher_study")
    @classmethod
    def _expand(cls, v: str | None) -> str | None:
        return os.path.expandvars(v) if v else v

    @model_validator(mode="after")
    def _one_teacher(self) -> "RetroOptions":
        given = [f"options.{k}" for k in TEACHERS if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"give one teacher, not {' and '.join(given)}")
        if self.teacher_study and self.train_part is not None:
            raise ValueError("options.train_part: chemtune sets it for a teacher stage; with options.teacher_study "
                             "give options.teacher_share instead")
        return self

    @property
    def part(self) -> TrainPart | None:
        """The side of the teacher split this study trains on: its own, or the student's of its teacher stage."""
        if self.train_part is not None:
            return self.train_part
        return TrainPart(side="student", share=self.teacher_share) if self.teacher_study else None


def parse_options(options: dict[str, Any]) -> RetroOptions:
    """Validate a study's ``options``; errors name the key (``options.<key>``)."""
    try:
        return RetroOptions.model_validate(options)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            where = ".".join(["options", *map(str, e["loc"])])
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {msg}")
        raise StudyError("; ".join(lines)) from None


@dataclass
class RetroData:
    """Prepared splits and (optionally) the teacher's labels aligned with the train rows."""

    train: Reactions
    valid: Reactions
    test: Reactions
    teacher: TeacherLabels | None = None
    teacher_top1: float | None = None  # the teacher's own top-1 on train (all rows), computed once


def study_max_gamma(spec: "StudySchema") -> float:
    """The largest gamma a study's trials can take: fixed, its grid, its narrowed range, else the knob's bound."""
    if "gamma" in (spec.fixed or {}):
        return float(spec.fixed["gamma"])
    if spec.grid and "gamma" in spec.grid:
        return max(float(g) for g in spec.grid["gamma"])
    bounds = (spec.ranges or {}).get("gamma")
    return max(float(b) for b in bounds) if bounds else 1.0


def prepare_retro(spec: "StudySchema") -> Prepared:
    """Load and canonicalize the reactions, get the teacher's labels; raise before any trial on bad data."""
    ds = spec.dataset
    opts = parse_options(spec.options)
    splits, report = DATASETS.get(ds.name).load(ds)
    assert isinstance(splits, ReactionSplits)
    for rep in splits.reports:
        rep.check(ds.max_bad_fraction)
    for name in ("train", "valid", "test"):
        if len(getattr(splits, name)) == 0:
            raise DataError(f"{ds.name}: the {name} split is empty\n{report.summary()}")
    teacher = None
    train, counts = splits.train, {}
    part = opts.part
    if part is not None:  # a teacher chemtune trains: it and its student see disjoint products
        halves = split_for_teacher(train, part.share, ds.seed)
        train = halves.teacher if part.side == "teacher" else halves.student
        counts = halves.counts()
    if opts.teacher_csv:
        teacher = teacher_from_csv(opts.teacher_csv, train.products, train.rows)
    elif opts.teacher_uri:
        teacher = teacher_from_model(opts.teacher_uri, train.products, train.rows, opts.eval_batch_size,
                                     opts.teacher_beams)
    top1 = teacher_top1(train.reactants, teacher) if teacher is not None else None
    if teacher is not None:  # refuse before any trial a gamma the teacher cannot cover
        try:
            check_coverage(study_max_gamma(spec), len(train), len(teacher.eligible), opts.gamma_shortfall)
        except ValueError as err:
            raise DataError(_coverage_error(opts, teacher, err)) from None
    data = RetroData(train, splits.valid, splits.test, teacher, top1)
    reports = [report] + ([teacher.report] if teacher else [])
    tags = {f"split_hash.{n}": reactions_hash(getattr(data, n)) for n in ("train", "valid", "test")}
    summary = {**{f"n_{n}": len(getattr(data, n)) for n in ("train", "valid", "test")}, **counts}
    if teacher is not None:
        summary["teacher_eligible"] = len(teacher.eligible)
        summary["teacher_unusable"] = teacher.report.n_excluded
        summary["teacher_train_top1"] = top1
    return Prepared(payload=data, reports=reports, tags=tags, summary=summary)


def _coverage_error(opts: RetroOptions, teacher: TeacherLabels, err: ValueError) -> str:
    """The refusal of a gamma the teacher cannot cover, with what to change for a model teacher."""
    if opts.teacher_csv:
        return f"{opts.teacher_csv}: {err}"
    issues = teacher.report.issues
    invalid = issues.get("invalid teacher prediction", {}).get("count", 0)
    missing = issues.get("no teacher prediction", {}).get("count", 0)
    return (f"teacher {opts.teacher_uri}: {err} ({invalid} of its predictions are invalid SMILES, {missing} missing); "
            f"raise options.teacher_beams (its first valid candidate among that many beams; now "
            f"{opts.teacher_beams}), train the teacher longer, or allow options.gamma_shortfall")


class RetroTrainer(EpochLoop):
    """One configuration: model and treatment, mixed labels and batches; the epoch loop is :class:`EpochLoop`'s.

    Args:
        config: Hyperparameters (:class:`RetroKnobs` and the treatment's knobs).
        data: The prepared reactions.
        spec: The trial's view of the study (model, epochs, seed, metric, options).
    """

    def __init__(self, config: dict[str, Any], data: RetroData, spec: "TrialSpec") -> None:
        self.config = {**DEFAULTS, **config}
        self.knobs = RetroKnobs.from_config(self.config)  # typed; a treatment's parts read their own from config
        self.spec, self.data, self.seed = spec, data, spec.seed
        self.opts = parse_options(spec.options)
        self.max_grad_norm = self.opts.max_grad_norm
        set_seed(self.seed)
        vocab_smiles = data.train.products + data.train.reactants
        if data.teacher is not None:
            vocab_smiles += [p for p in data.teacher.predictions if p]
        model, self.tokenizer = load_seq2seq(spec.model, vocab_smiles, self.seed)
        self.start_id = decoder_start_id(model)
        self.model = apply_treatment(model, self.knobs.treatment, self.config)
        if needs_pretrained(self.knobs.treatment) and not self.knobs.train_embeddings:
            freeze_embeddings(self.model.base())
        self.n_trainable, self.n_total = count_parameters(self.model)
        self.mixed = mix_labels(data.train.reactants, data.teacher, self.knobs.gamma, self.seed, self.opts.gamma_shortfall)
        self.setup_accelerator()
        self.max_length = self.tokenizer.model_max_length
        self.valid = data.valid.head(self.opts.val_subset)
        self.test = data.test.head(self.opts.test_limit)
        self.encoded = {name: self.encode(r.products, r.reactants) for name, r in (("valid", self.valid), ("test", self.test))}
        self._smoothing = self.knobs.label_smoothing

    # -- data -----------------------------------------------------------------------------------
    def encode(self, sources: list[str], targets: list[str]) -> list[tuple[list[int], list[int]]]:
        """``(source ids, label ids)`` pairs; labels end with EOS and omit the decoder start token."""
        kw = {"truncation": True, "max_length": self.max_length}
        src = self.tokenizer(list(sources), **kw)["input_ids"]
        tgt = self.tokenizer(list(targets), **kw)["input_ids"]
        return [(s, t[1:] if t and t[0] == self.start_id else t) for s, t in zip(src, tgt)]

    def collate(self, batch: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        """Dynamic padding; the decoder input is the labels shifted right behind the start token."""
        return seq2seq_batch(batch, self.tokenizer.pad_token_id, self.start_id)

    def epoch_items(self, epoch: int) -> list[tuple[list[int], list[int]]]:
        """Train pairs of ``epoch``: a seeded share ``augment_prob`` of rows as randomized SMILES."""
        rng = random.Random(self.seed * 100_003 + epoch)
        p = self.knobs.augment_prob
        sources, targets = list(self.data.train.products), list(self.mixed.labels)
        for i in range(len(sources)):
            if p > 0 and rng.random() < p:
                sources[i] = randomize_smiles(sources[i], rng)
                if self.opts.augment_target:
                    targets[i] = randomize_smiles(targets[i], rng)
        return self.encode(sources, targets)

    def train_loader(self, epoch: int) -> DataLoader:
        """Length-grouped (by source + target length), dynamically padded batches (CPU; the loop places them)."""
        items = self.epoch_items(epoch)
        return length_grouped_loader(items, [len(s) + len(t) for s, t in items], self.knobs.batch_size,
                                     self.collate, self.seed * 1000 + epoch)

    def epoch_rows(self) -> list[int]:
        return [len(self.data.train)] * self.spec.max_epochs

    # -- loss and evaluation --------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor], smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean token cross-entropy and the logits."""
        labels = batch["labels"]
        logits = self.model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100,
                               label_smoothing=smoothing)
        return loss, logits

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        loss, _ = self.loss(batch, self._smoothing)
        return loss, int((batch["labels"] != -100).sum())

    @torch.no_grad()
    def teacher_forced(self, pairs: list[tuple[list[int], list[int]]]) -> dict[str, float]:
        """Token accuracy and loss (no smoothing) with teacher forcing, batches sorted by length."""
        self.model.eval()
        bs = self.opts.eval_batch_size
        loss_sum, correct, count = 0.0, 0, 0
        for chunk in sorted_chunks([len(s) + len(t) for s, t in pairs], bs):
            batch = to_device(self.collate([pairs[i] for i in chunk]), self.device)
            with self.accelerator.autocast():
                loss, logits = self.loss(batch, 0.0)
            mask = batch["labels"] != -100
            n = int(mask.sum())
            loss_sum += float(loss) * n
            correct += int(((logits.argmax(-1) == batch["labels"]) & mask).sum())
            count += n
        return {"token_acc": correct / max(count, 1), "loss": loss_sum / max(count, 1)}

    def beams(self, pairs: list[tuple[list[int], list[int]]], num_beams: int, top_k: int) -> list[list[str]]:
        return generate(self.unwrapped(), self.tokenizer, [s for s, _ in pairs],
                        num_beams=num_beams, top_k=top_k, batch_size=self.opts.eval_batch_size,
                        max_length=self.max_length, autocast=self.accelerator.autocast, device=self.device)

    def evaluate_valid(self, ckpt: Path | None = None) -> dict[str, float]:
        """Teacher-forced token accuracy / loss and greedy top-1 on the fixed validation subset."""
        out = self.teacher_forced(self.encoded["valid"])
        greedy = self.beams(self.encoded["valid"], 1, 1)
        out["top1"] = score_topk(greedy, self.valid.reactants, ks=(1,), dedupe=self.opts.dedupe_beams).metrics["top1"]
        return out

    def evaluate_test(self, ckpt: Path) -> dict[str, float]:
        """Beam search on test: top-1/3/5/10, invalid share; predictions written to ``test_predictions.csv``."""
        k = self.opts.beam_size
        beams = self.beams(self.encoded["test"], k, k)
        scored = score_topk(beams, self.test.reactants, ks=TOPK, dedupe=False)  # the paper's protocol
        dedup = score_topk(beams, self.test.reactants, ks=TOPK, dedupe=True)
        frame = pd.DataFrame({"row": self.test.rows, "product": self.test.products,
                              "reactants": self.test.reactants, "rank": scored.ranks, "rank_dedup": dedup.ranks})
        for j in range(k):
            frame[f"prediction_{j + 1}"] = [b[j] if j < len(b) else "" for b in beams]
        frame.to_csv(ckpt / "test_predictions.csv", index=False)
        return {**scored.metrics, **{f"top{k}_dedup": dedup.metrics[f"top{k}"] for k in TOPK},
                **self.teacher_forced(self.encoded["test"])}

    # -- training -------------------------------------------------------------------------------
    def make_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
        return lr_scheduler(self.knobs.schedule, optimizer, total_steps=total_steps, warmup=self.knobs.warmup,
                            cycles=self.knobs.lr_cycles)

    def throughput(self, units: int, seconds: float) -> dict[str, float]:
        return {"train_tokens_per_s": units / max(seconds, 1e-9)}

    def epoch_log(self, epoch: int) -> dict[str, Any]:
        return {"trainable_params": self.n_trainable, "total_params": self.n_total, **self._teacher_log()}

    def _teacher_log(self) -> dict[str, float]:
        if self.data.teacher is None:
            return {}
        issues = self.data.teacher.report.issues
        n = max(len(self.data.train), 1)
        top1 = self.data.teacher_top1
        return {**({"teacher_train_top1": top1} if top1 is not None else {}), "teacher_eligible": self.mixed.n_eligible, "teacher_replaced": len(self.mixed.replaced),
                "gamma_effective": len(self.mixed.replaced) / n,  # over ALL train rows, not only the usable ones
                "teacher_invalid": issues.get("invalid teacher prediction", {}).get("count", 0),
                "teacher_missing": issues.get("no teacher prediction", {}).get("count", 0)}

    # -- checkpoints and export -----------------------------------------------------------------
    def export(self, path: Path) -> None:
        """The serving directory: the transformers model (LoRA merged), tokenizer, adapters, beam width."""
        base, adapters = self.unwrapped().export()
        save_retro_model(path, base, self.tokenizer, adapters, self.opts.beam_size)

    def write_artifacts(self, ckpt: Path) -> None:
        """``teacher_replaced.csv``: the train rows whose label the teacher replaced."""
        if self.data.teacher is not None:
            idx = self.mixed.replaced
            train = self.data.train
            pd.DataFrame({"row": [train.rows[i] for i in idx], "product": [train.products[i] for i in idx],
                          "label": [train.reactants[i] for i in idx],
                          "teacher": [self.mixed.labels[i] for i in idx]}).to_csv(ckpt / "teacher_replaced.csv", index=False)


def train_retro(config: dict[str, Any], data: RetroData, spec: "TrialSpec", reporter: Reporter) -> dict[str, float]:
    """Train and evaluate one configuration; the plain function core of the ``retro`` task."""
    return RetroTrainer(config, data, spec).fit(reporter)


def _validate(spec: "StudySchema") -> None:
    opts = parse_options(spec.options)
    if spec.model.name not in SEQ2SEQ:
        raise StudyError(f"model.name: the retro task needs a seq2seq model, one of {SEQ2SEQ.names()}; got {spec.model.name!r}")
    if spec.model.name == "hf-seq2seq" and not spec.model.path:
        raise StudyError("model.path: model 'hf-seq2seq' needs a hub id or a local directory")
    if opts.teacher_csv and not Path(opts.teacher_csv).is_file():
        raise DataError(f"options.teacher_csv: {opts.teacher_csv}: file not found")
    if "treatment" in spec.fixed:
        validate_treatment(spec.fixed["treatment"])
    if is_random_init(spec.model) and not opts.allow_random_init:
        frozen = [t for t in _possible_treatments(spec) if needs_pretrained(t)]
        if frozen:
            raise StudyError(
                f"model: {spec.model.name!r} without model.path starts from random weights, so freezing a stack or "
                f"LoRA ({', '.join(frozen)}) is meaningless; set model.path to a Chemformer .ckpt or a transformers "
                "checkpoint, model.pretrain to a pretrain study, or options.allow_random_init: true for a smoke test")
    if opts.teacher_study and not Path(opts.teacher_study).expanduser().is_file():
        raise StudyError(f"options.teacher_study {opts.teacher_study!r}: no such study file")
    gamma = spec.fixed.get("gamma", None if "gamma" in spec.searched else DEFAULTS["gamma"])
    if gamma != 0 and not any(getattr(opts, k) for k in TEACHERS):
        raise StudyError("fixed.gamma: without a teacher (options.teacher_csv, options.teacher_uri or "
                         "options.teacher_study) fix gamma: 0")


def _possible_treatments(spec: "StudySchema") -> list[str]:
    """Every treatment a trial of the study can get: fixed, narrowed, enqueued or the space's choices."""
    if "treatment" in spec.fixed:
        return [spec.fixed["treatment"]]
    found = list(spec.ranges.get("treatment", TREATMENT_CHOICES))
    found += [p["treatment"] for p in spec.enqueue if "treatment" in p]
    found += list((getattr(spec, "grid", None) or {}).get("treatment", []))
    return list(dict.fromkeys(found))


def retro_pyfunc() -> Any:
    """The MLflow pyfunc that serves a retro checkpoint's ``model/`` folder (imported only when logging)."""
    from trainables.retro.serving import RetroPyfunc

    return RetroPyfunc()


TASKS.register(
    "retro",
    Task(data_kind="reactions", metrics=METRICS, maximize=frozenset({"top1", "token_acc", "top3", "top5", "top10"}),
         prepare=prepare_retro, train=train_retro, validate=_validate, pyfunc=retro_pyfunc,
         test_metrics=("top3", "top5", "top10", "invalid", "invalid_beams")),
    help="retrosynthesis: seq2seq product -> reactants, beam-search top-k (treatments, LoRA, adapters, gamma)",
)
