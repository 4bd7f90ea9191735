"""The study schema (pydantic; errors name the key) and the narrow :class:`TrialSpec` a trial's core receives.

It lives below the core so that trainables need nothing from ``studies``: the checks that need the
search spaces (and the YAML loader) are in ``studies.spec``, which extends :class:`StudySchema` with them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from trainables.base import TASKS
from trainables.data.datasets import DATASETS
from trainables.errors import StudyError
from trainables.metrics import parse_metric, parse_objective
from trainables.models.backbones import BACKBONES

__all__ = [
    "DatasetSpec", "ModelSpec", "ResourcesSpec", "SchedulerSpec", "TrackingSpec", "TableSpec",
    "StudySchema", "TrialSpec",
]


def _registry(kind: str) -> Any:
    # The registries name the fields they read (``DatasetSection``, ``ModelSection``), not this module's types.
    if kind == "split":
        from trainables.data.splits import SPLITTERS  # imported late: RDKit, and `chemtune list` reads this module

        return SPLITTERS
    return {"dataset": DATASETS, "model": BACKBONES, "task": TASKS}[kind]


def _registered(kind: str) -> AfterValidator:
    """A validator that accepts only names registered as ``kind`` (the error lists the choices)."""

    def check(value: str) -> str:
        _registry(kind).get(value)
        return value

    return AfterValidator(check)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TableSpec(_Strict):
    """An external CSV of labelled molecules (for example a selection pool)."""

    path: str = Field(description="CSV file")
    smiles_column: str = Field("smiles", description="column holding SMILES")
    target_column: str = Field("target", description="column holding the label")


class DatasetSpec(_Strict):
    """Which data, how it is split, and how much bad input is tolerated."""

    name: Annotated[str, _registered("dataset")] = Field(description="registered dataset (chemtune list datasets)")
    path: str | None = Field(None, description="file or folder; default: $CHEMTUNE_DATA_DIR or download")
    smiles_column: str = Field("smiles", description="for csv: the SMILES column")
    target_column: str = Field("target", description="for csv: the label column")
    id_column: str | None = Field(None, description="for csv: an optional identifier column")
    split: Annotated[str, _registered("split")] = Field("scaffold", description="registered splitter: random or scaffold")
    seed: int = Field(0, description="seed of the split")
    fractions: dict[str, float] = Field(
        default_factory=lambda: {"valid": 0.1, "test": 0.1},
        description="shares of valid, test and (optional) pool; train gets the rest",
    )
    max_bad_fraction: float = Field(0.05, ge=0, le=1, description="stop if more rows than this share are bad")
    limit: int | None = Field(None, gt=0, description="use only the first N valid rows (smoke runs)")

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - {"valid", "test", "pool"}
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}; use valid, test, pool")
        if any(x < 0 for x in v.values()) or sum(v.values()) >= 1:
            raise ValueError("fractions must be >= 0 and sum to less than 1 (train gets the rest)")
        return v


class ModelSpec(_Strict):
    """The pretrained backbone."""

    name: Annotated[str, _registered("model")] = Field(description="registered backbone (chemtune list models), or 'hf' with path")
    path: str | None = Field(None, description="hub id, local directory, or MLflow model (models:/NAME@ALIAS)")
    trust_remote_code: bool = Field(False, description="allow the hub model's own code (MoLFormer needs it)")
    max_length: int = Field(256, gt=8, description="longest token sequence; longer SMILES are truncated")
    pretrain: str | None = Field(
        None, description="pretraining stage: a pretrain study file whose checkpoint (cached by content hash; "
                          "`launch` pretrains it first) becomes model.path")

    @field_validator("path", "pretrain")
    @classmethod
    def _expand(cls, v: str | None) -> str | None:
        # $VARS let a shared study file name a checkpoint on each cluster ($CHEMTUNE_DATA_DIR/chemformer/...).
        return os.path.expandvars(v) if v else v

    @model_validator(mode="after")
    def _hf_needs_path(self) -> "ModelSpec":
        if self.name == "hf" and not self.path and not self.pretrain:
            raise ValueError("model 'hf' needs model.path (a hub id or a local directory)")
        mlflow_uri = self.path and self.path.startswith(("models:/", "runs:/"))  # fetched when a trial loads it
        local = self.path and not mlflow_uri and (
            self.path.startswith(("/", ".", "~")) or os.sep in self.path.strip("/").split("/", 1)[-1])
        if local and not Path(self.path).expanduser().exists():
            raise ValueError(f"model.path {self.path!r}: no such file or directory")
        if self.pretrain and self.path:
            raise ValueError("give model.path or model.pretrain (whose checkpoint becomes the path), not both")
        if self.pretrain and not Path(self.pretrain).expanduser().is_file():
            raise ValueError(f"model.pretrain {self.pretrain!r}: no such study file")
        return self


class ResourcesSpec(_Strict):
    """Per-trial resources on the Ray cluster."""

    cpus_per_trial: float = Field(1, gt=0, description="CPUs each trial reserves")
    gpus_per_trial: float = Field(0, ge=0, description="GPUs each trial reserves; fractions pack trials on one GPU")
    num_workers: int = Field(1, ge=1, description="Ray Train workers per trial (several GPUs per trial)")
    max_concurrent_trials: int | None = Field(None, ge=1, description="cap on trials running at once")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="autocast: auto = bf16 on a GPU that supports it, fp32 elsewhere; bf16 = on the CPU too "
                            "(about 2x faster on CPUs with AVX512-BF16 or AMX; weights, optimizer and the regression "
                            "head stay fp32); fp32 = never")
    reuse_actors: bool | None = Field(
        None, description="a finished trial's process runs the next trial (default: yes on the embedded local "
                          "Ray; no on a cluster, where reuse keeps queued trials off nodes that just joined)")

    @model_validator(mode="after")
    def _gpu_shapes(self) -> "ResourcesSpec":
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise ValueError("gpus_per_trial above 1 must be a whole number")
        if self.reuse_actors and self.num_workers > 1:
            raise ValueError("reuse_actors: a Ray Train trial (num_workers > 1) starts its own workers; set it "
                             "only for one-worker trials")
        return self


class SchedulerSpec(_Strict):
    """ASHA early stopping over epochs."""

    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it can be stopped")
    reduction_factor: float = Field(3, gt=1, description="ASHA's eta")


class TrackingSpec(_Strict):
    """Where results go; each defaults to the embedded store under ./chemtune-runs."""

    tracking_uri: str | None = Field(None, description="MLflow tracking URI (default: env or local SQLite)")
    storage_path: str | None = Field(None, description="Ray Tune storage (shared dir or URI on a cluster)")
    optuna_storage: str | None = Field(None, description="Optuna RDB URL (default: SQLite beside MLflow)")
    experiment: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128,
                                   description="MLflow experiment (default: the study name)")


class StudySchema(_Strict):
    """A hyperparameter study: task, data, model, search space and budget (what a task reads of it).

    A study file is loaded as ``studies.spec.StudySpec``, which extends this with the search-space checks.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128,
                      description="study name (letters, digits, _ . -; no '..'; at most 128 characters)")
    task: Annotated[str, _registered("task")] = Field(description="registered task (property, retro, ...)")
    dataset: DatasetSpec
    model: ModelSpec
    search_space: str = Field(description="registered search space (chemtune list spaces)")
    fixed: dict[str, Any] = Field(default_factory=dict, description="parameters held constant")
    ranges: dict[str, Any] = Field(
        default_factory=dict, description="narrowed ranges: [low, high] for numbers, a list for choices"
    )
    enqueue: list[dict[str, Any]] = Field(
        default_factory=list, description="configurations (full or partial) to try first, e.g. one per method"
    )
    sampler: Literal["tpe", "grid"] = Field(
        "tpe", description="tpe: Optuna TPE over the space; grid: each combination of `grid` exactly once")
    grid: dict[str, list[Any]] = Field(
        default_factory=dict, description="sampler grid: parameter -> values (a paper table's rows)")
    options: dict[str, Any] = Field(default_factory=dict, description="task options (see the task's help)")
    pool: TableSpec | None = Field(None, description="external pool for data-selection methods")
    num_trials: int = Field(8, ge=1, description="trials Optuna proposes")
    max_epochs: int = Field(5, ge=1, description="epochs per trial (ASHA's max_t)")
    metric: str = Field("valid_rmse", description="metric the search optimises (a valid_* metric)")
    mode: Literal["min", "max"] | None = Field(None, description="default: min for losses/errors, max otherwise")
    objectives: list[str] = Field(
        default_factory=list,
        description="multi-objective study: the metric first, then costs to trade against it (trainable_params, "
                    "device_seconds, peak_memory_mb, predict_ms_per_1k); Optuna searches their Pareto front")
    seed: int = Field(0, description="seed of the sampler and of every trial")
    max_failures: int = Field(1, ge=0, description="retries of a failed trial (from its last checkpoint)")
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    # Names of the knobs the study's search space samples; set by ``studies.spec`` (which knows the spaces).
    _searched: frozenset[str] = PrivateAttr(default_factory=frozenset)

    @model_validator(mode="after")
    def _consistent(self) -> "StudySchema":
        task = TASKS.get(self.task)
        kind = DATASETS.get(self.dataset.name).kind
        if kind != task.data_kind:
            raise ValueError(f"task {self.task!r} needs a {task.data_kind} dataset; {self.dataset.name!r} holds {kind}")
        try:
            parse_metric(self.metric, task, splits=("valid",))
        except StudyError:
            allowed = ", ".join(f"valid_{m}" for m in task.metrics)
            raise ValueError(f"metric {self.metric!r} is not one the {self.task} task reports; choose {allowed}") from None
        if self.objectives:
            self._check_objectives(task)
        return self

    def _check_objectives(self, task: Any) -> None:
        """The metric first (it sets ``metric`` when the file leaves it out), then distinct costs or metrics."""
        if len(self.objectives) < 2:
            raise ValueError("objectives: give the metric and at least one cost (a single objective is `metric:`)")
        first = self.objectives[0]
        if not first.startswith("valid_"):
            raise ValueError(f"objectives[0]: {first!r} must be the study's metric (a valid_* metric), costs after it")
        if "metric" in self.model_fields_set and first != self.metric:
            raise ValueError(f"objectives[0]: {first!r} differs from metric {self.metric!r}; the first objective "
                             "is the study's metric (leave metric out or make them equal)")
        seen: set[str] = set()
        for i, name in enumerate(self.objectives):
            try:
                parse_objective(name, task)
            except StudyError as err:
                raise ValueError(f"objectives[{i}]: {err}") from None
            if name in seen:
                raise ValueError(f"objectives[{i}]: {name!r} is listed twice")
            seen.add(name)
        if first != self.metric:  # the first objective is the metric ASHA, the progress line and `register` use
            object.__setattr__(self, "metric", first)

    @property
    def directions(self) -> list[Literal["min", "max"]]:
        """Direction of each of :attr:`objectives` (the metric's is :attr:`direction`); empty for one objective."""
        if not self.objectives:
            return []
        return [self.direction] + [parse_objective(o, self.task).direction for o in self.objectives[1:]]

    @property
    def searched(self) -> frozenset[str]:
        """The knobs the search space samples (empty unless validated through ``studies.spec``)."""
        return self._searched

    @property
    def direction(self) -> Literal["min", "max"]:
        """Optimisation direction of :attr:`metric`."""
        return self.mode or parse_metric(self.metric, self.task).direction

    def trial_spec(self) -> "TrialSpec":
        """What a trial's core reads of the study."""
        return TrialSpec(
            name=self.name, task=self.task, dataset=self.dataset, model=self.model, options=dict(self.options),
            pool=self.pool, max_epochs=self.max_epochs, seed=self.seed, metric=self.metric,
            direction=self.direction, resources=self.resources,
        )


class TrialSpec(_Strict):
    """The narrow view of a study a trial's core receives (``Task.train``): no search space, no tracking."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    task: str
    dataset: DatasetSpec
    model: ModelSpec
    options: dict[str, Any] = Field(default_factory=dict)
    pool: TableSpec | None = None
    max_epochs: int = Field(ge=1)
    seed: int = 0
    metric: str
    direction: Literal["min", "max"]
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    # A refit (``chemtune promote``) trains on train + valid for the epochs its trial found best: valid rows
    # are training rows then, so valid cannot choose an epoch and the last epoch's weights are the model.
    refit: bool = False
