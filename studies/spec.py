"""Loading a study file: the schema (``trainables.spec``) plus the checks that need the search spaces.

The schema names are re-exported here so that ``from studies.spec import StudySpec`` keeps working.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainables.errors import StudyError
from trainables.spec import (
    DatasetSpec, ModelSpec, ResourcesSpec, SchedulerSpec, TableSpec, TrackingSpec, TrialSpec,
    StudySpec as _StudySchema,
)

__all__ = [
    "DatasetSpec", "ModelSpec", "ResourcesSpec", "SchedulerSpec", "TrackingSpec", "TableSpec", "TrialSpec",
    "BaselinesSpec", "StudySpec", "load_study", "parse_study",
]


def _registered_space(value: str) -> str:
    from search_spaces import SPACES

    SPACES.get(value)
    return value


class BaselinesSpec(BaseModel):
    """Peer baselines fitted once per study on its own splits (property studies; see trainables.baselines).

    ``None`` means the task's default: a property study fits the random forest; chemprop (an
    optional extra, minutes on CPU) only when asked for.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    random_forest: bool | None = Field(None, description="random forest on Morgan counts + RDKit 2D descriptors")
    chemprop: bool | None = Field(None, description="chemprop D-MPNN with its CLI defaults (needs chemtune[chemprop])")
    chemprop_epochs: int = Field(50, ge=1, description="epochs of the chemprop baseline (its CLI default: 50)")
    random_forest_trees: int = Field(500, ge=1, description="trees of the random forest baseline")

    def enabled(self, task: str) -> list[str]:
        """The baselines this study fits, in order."""
        defaults = {"random_forest": task == "property", "chemprop": False}
        return [n for n, d in defaults.items() if (getattr(self, n) if getattr(self, n) is not None else d)]


class StudySpec(_StudySchema):
    """A hyperparameter study, checked against its search space and its task's options; with the
    study-level extras that run beside the trials (baselines, seed repeats)."""

    search_space: Annotated[str, AfterValidator(_registered_space)]
    baselines: BaselinesSpec = Field(default_factory=BaselinesSpec, description="peer baselines on the same split")
    seed_repeats: int = Field(0, ge=0, description="after the search, re-train the best configuration with this many other seeds")

    @model_validator(mode="after")
    def _fits_the_space(self) -> "StudySpec":
        from search_spaces import SPACES
        from trainables import TASKS

        space = SPACES.get(self.search_space)
        space.validate_overrides(self.fixed, self.ranges)
        for i, point in enumerate(self.enqueue):
            try:
                space.validate_overrides(point, {})
            except StudyError as err:
                raise ValueError(f"enqueue[{i}]: {err}") from None
        if self.sampler == "grid" or self.grid:
            from studies.grid import check_grid

            if self.sampler != "grid":
                raise ValueError("grid: set sampler: grid to run a grid")
            if self.enqueue:
                raise ValueError("enqueue: a grid study runs its grid; leave enqueue out")
            check_grid(space, self.grid, self.fixed, self.ranges, self.num_trials)
        self._searched = frozenset(space.names)
        TASKS.get(self.task).validate(self)
        self._check_baselines()
        self._check_dmpnn(space)
        return self

    def _check_dmpnn(self, space: Any) -> None:
        if "arch" not in space.names:
            return
        arch = self.fixed.get("arch")
        choices = [arch] if arch else self.ranges.get("arch") or next(p for p in space.params if p.name == "arch").options()
        from trainables.models.chemprop_api import INSTALL_HINT, chemprop_available

        if "dmpnn" in choices and not chemprop_available():
            raise ValueError(f"search_space {self.search_space!r}: arch dmpnn needs chemprop, which is not installed; "
                             f"{INSTALL_HINT} (or fixed: {{arch: lm}})")

    def _check_baselines(self) -> None:
        asked = [n for n in ("random_forest", "chemprop") if getattr(self.baselines, n)]
        if asked and self.task != "property":
            raise ValueError(f"baselines.{asked[0]}: baselines exist for property studies only, not {self.task!r}")
        if "chemprop" in self.baselines.enabled(self.task):
            from trainables.models.chemprop_api import INSTALL_HINT, chemprop_available

            if not chemprop_available():
                raise ValueError(f"baselines.chemprop: chemprop is not installed; {INSTALL_HINT}")


def _format(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid study file"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def parse_study(data: Any, source: str = "<study>") -> StudySpec:
    """Validate a study given as a mapping; raise :class:`StudyError` naming each bad key."""
    if not isinstance(data, dict):
        raise StudyError(f"{source}: a study file must be a mapping of keys, got {type(data).__name__}")
    try:
        return StudySpec.model_validate(data)
    except ValidationError as err:
        raise StudyError(_format(err, source)) from None


def load_study(path: str | os.PathLike[str]) -> StudySpec:
    """Read and validate a YAML study file."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: study file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise StudyError(f"{path}: malformed YAML: {err}") from None
    return parse_study(_anchor_pretrain(data, path.parent), source=str(path))


def _anchor_pretrain(data: Any, folder: Path) -> Any:
    """``model.pretrain`` relative to the study file's folder (as a study file reads its neighbours)."""
    model = data.get("model") if isinstance(data, dict) else None
    ref = model.get("pretrain") if isinstance(model, dict) else None
    if isinstance(ref, str):
        path = Path(os.path.expandvars(ref)).expanduser()
        if not path.is_absolute() and (folder / path).is_file():
            data = {**data, "model": {**model, "pretrain": str((folder / path).resolve())}}
    return data
