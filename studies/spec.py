"""Loading a study file: the schema (``trainables.spec``) plus the checks that need the search spaces.

The schema names are re-exported here so that ``from studies.spec import StudySpec`` keeps working.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, ValidationError, model_validator

from trainables.errors import StudyError
from trainables.spec import (
    DatasetSpec, ModelSpec, ResourcesSpec, SchedulerSpec, TableSpec, TrackingSpec, TrialSpec,
    StudySpec as _StudySchema,
)

__all__ = [
    "DatasetSpec", "ModelSpec", "ResourcesSpec", "SchedulerSpec", "TrackingSpec", "TableSpec", "TrialSpec",
    "StudySpec", "load_study", "parse_study",
]


def _registered_space(value: str) -> str:
    from search_spaces import SPACES

    SPACES.get(value)
    return value


class StudySpec(_StudySchema):
    """A hyperparameter study, checked against its search space and its task's options."""

    search_space: Annotated[str, AfterValidator(_registered_space)]

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
        return self


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
    return parse_study(data, source=str(path))
