"""Loading a study file: the schema (``trainables.spec``) plus the checks that need the search spaces.

The schema names are re-exported here. :class:`StudySpec` (a study file, checked against its space) extends
the Ray-free :class:`trainables.spec.StudySchema` that tasks read; only this one is called ``StudySpec``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainables.errors import DataError, StudyError
from trainables.inputs import excerpt, read_text
from trainables.spec import (
    DatasetSpec,
    ModelSpec,
    ResourcesSpec,
    SchedulerSpec,
    StudySchema,
    TableSpec,
    TrackingSpec,
    TrialSpec,
)

__all__ = [
    "DatasetSpec", "ModelSpec", "ResourcesSpec", "SchedulerSpec", "TrackingSpec", "TableSpec", "TrialSpec",
    "BaselinesSpec", "StudySpec", "load_study", "read_study", "input_files", "parse_study",
]


def _registered_space(value: str) -> str:
    from search_spaces import SPACES

    SPACES.get(value)
    return value


class BaselinesSpec(BaseModel):
    """Peer baselines fitted once per study on its own splits (property studies; see trainables.property.baselines).

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


class StudySpec(StudySchema):
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
        unsampled = {p.name for p in space.declared if not p.searchable}
        for i, point in enumerate(self.enqueue):
            try:
                space.validate_overrides(point, {})
            except StudyError as err:
                raise ValueError(f"enqueue[{i}]: {err}") from None
            for key in sorted(point):  # an enqueued point is a value for the sampler: it sets only what it samples
                if key in unsampled or (key in self.fixed and point[key] != self.fixed[key]):
                    raise ValueError(
                        f"enqueue[{i}].{key}: the sampler never draws it ("
                        f"{'a fixed-only knob' if key in unsampled else 'fixed.' + key + ' sets it for every trial'}), "
                        f"so the enqueued value would be ignored; set it for the study in fixed.{key}")
        if self.sampler == "grid" or self.grid:
            from studies.grid import check_grid  # imported late: grid imports optuna, `chemtune list` reads this module

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


_MAX_STUDY_BYTES = 1 << 20  # a study file is a page of YAML


def load_study(path: str | os.PathLike[str]) -> StudySpec:
    """Read and validate a YAML study file (``validate``, ``launch``, and the copy ``resume`` reads)."""
    return parse_study(read_study(path), source=str(path))


def read_study(path: str | os.PathLike[str]) -> Any:
    """A study file's YAML, not yet validated (validation loads the plug-ins it names: torch, seconds).

    Checked before YAML sees it (size, UTF-8, no NUL: :func:`trainables.inputs.read_text`); a YAML error,
    a planted tag (``!!python/object``) included, is one line naming the file and the place.
    """
    path = Path(path)
    try:
        text = read_text(path, "study file", _MAX_STUDY_BYTES)
    except DataError as err:
        raise StudyError(str(err).replace("file not found", "study file not found")) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise StudyError(f"{path}: malformed YAML: {_yaml_problem(err)}") from None
    return _anchor_pretrain(data, path.parent)


def _anchor_pretrain(data: Any, folder: Path) -> Any:
    """``model.pretrain`` and ``options.teacher_study`` (stage study files) relative to the study file's folder
    (as a study file reads its neighbours)."""
    for section, key in (("model", "pretrain"), ("options", "teacher_study")):
        part = data.get(section) if isinstance(data, dict) else None
        ref = part.get(key) if isinstance(part, dict) else None
        if isinstance(ref, str):
            path = Path(os.path.expandvars(ref)).expanduser()
            if not path.is_absolute() and (folder / path).is_file():
                data = {**data, section: {**part, key: str((folder / path).resolve())}}
    return data


def input_files(data: Any) -> dict[str, str | None]:
    """The files a study file (its YAML, not yet validated) names, by key: ``validate`` and ``launch`` check
    them before validation loads the plug-ins, so a bad file is refused in seconds."""
    def get(section: str, key: str) -> str | None:
        value = (data.get(section) or {}).get(key) if isinstance(data, dict) and isinstance(data.get(section), dict) else None
        return value if isinstance(value, str) else None

    return {"dataset.path": get("dataset", "path"), "pool.path": get("pool", "path"),
            "options.teacher_csv": get("options", "teacher_csv"), "model.pretrain": get("model", "pretrain"),
            "options.teacher_study": get("options", "teacher_study")}


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One line: what YAML objects to and where (its own message spans lines and quotes the input)."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"{excerpt(err.problem or err.context or 'invalid YAML', 120)}{where}"
    return excerpt(str(err).splitlines()[0] if str(err) else type(err).__name__, 120)
