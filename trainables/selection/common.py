"""Shared pieces of the selection methods: validated knobs, study-time checks, embeddings, artifacts.

torch and pandas are imported by the functions that use them: the knobs are read without them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from trainables.errors import StudyError
from trainables.io import atomic_path
from trainables.knobs import KnobSet, search_of

if TYPE_CHECKING:
    import torch

    from trainables.selection.base import SelectionContext
    from trainables.spec import StudySchema

__all__ = ["Knobs", "study_values", "study_bounds", "study_choices", "first_rung", "embed_ids", "write_selection_csv"]


class Knobs(KnobSet):
    """Base of a selector's knobs (declared once: the ``selection`` space derives from them).

    ``pool_knobs`` name the knobs that count pool molecules; ``needs_pool`` says whether the
    method chooses from the pool at all.
    """

    needs_pool: ClassVar[bool] = True
    pool_knobs: ClassVar[tuple[str, ...]] = ()

    def pool_demand(self) -> int:
        """How many pool molecules this setting takes (checked against the pool size)."""
        return 0

    @classmethod
    def check_study(cls, spec: "StudySchema", n_pool: int | None, name: str) -> None:
        """Fail before any trial: fixed knobs valid, and (when known) the pool big enough.

        Args:
            spec: The study.
            n_pool: Pool molecules after exclusions, or ``None`` before the data is read.
            name: The selection method (for messages).
        """
        values = study_values(spec, cls.model_fields)
        knobs = cls.from_config(values, where=f"{spec.name}: selection {name!r}")
        if not cls.needs_pool:
            return
        has_pool = spec.pool is not None or spec.dataset.fractions.get("pool", 0) > 0
        if not has_pool:
            raise StudyError(
                f"{spec.name}: selection {name!r} chooses from a pool, but the study has none; "
                "give `pool: {path, smiles_column, target_column}` or dataset.fractions.pool > 0"
            )
        if n_pool is None:
            return
        if n_pool == 0:
            raise StudyError(f"{spec.name}: selection {name!r}: the pool is empty after excluding molecules in valid/test "
                             "(and, under a scaffold split, molecules with a valid/test scaffold; see the data report)")
        demand = knobs.pool_demand()
        if demand > n_pool:
            what = " * ".join(cls.pool_knobs)
            raise StudyError(
                f"{spec.name}: selection {name!r} takes {demand} pool molecules ({what}, largest value the study "
                f"allows) but the pool holds {n_pool}; lower {cls.pool_knobs[0]} or enlarge the pool"
            )


def study_values(spec: "StudySchema", names: Iterable[str]) -> dict[str, Any]:
    """Values of ``names`` as the study allows them: fixed values, and the high end of ranges.

    The high end is what a pool-size check needs (the largest top_k a trial can draw).
    """
    out: dict[str, Any] = {}
    for name in names:
        if name in spec.fixed:
            out[name] = spec.fixed[name]
        elif name in spec.ranges:
            value = spec.ranges[name]
            numeric = isinstance(value, (list, tuple)) and len(value) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            if numeric:
                out[name] = max(value)
    return out


def _allowed(spec: "StudySchema", knobs: type[KnobSet], name: str) -> list[Any] | None:
    """Values the study pins knob ``name`` to (fixed, a grid's, narrowed choices); ``None`` when it does not."""
    if name in spec.fixed:
        return [spec.fixed[name]]
    for values in (spec.grid, spec.ranges):
        if name in values:
            return list(values[name])
    return None


def study_bounds(spec: "StudySchema", knobs: type[KnobSet], name: str) -> tuple[float, float]:
    """Lowest and highest value of numeric knob ``name`` a trial of the study can get: fixed, grid, narrowed
    range, the space's search range when the study samples it, else the declared default."""
    values = _allowed(spec, knobs, name)
    if values is None:
        search = search_of(knobs, name)
        if name in spec.searched and search is not None and search.low is not None:
            return search.low, search.high
        values = [knobs.model_fields[name].default]
    return min(values), max(values)


def study_choices(spec: "StudySchema", knobs: type[KnobSet], name: str) -> list[Any]:
    """Every value of categorical knob ``name`` a trial of the study can get (as :func:`study_bounds`)."""
    values = _allowed(spec, knobs, name)
    if values is None:
        search = search_of(knobs, name)
        if name in spec.searched and search is not None and search.choices is not None:
            return list(search.choices() if callable(search.choices) else search.choices)
        values = [knobs.model_fields[name].default]
    return values


def first_rung(spec: "StudySchema") -> int:
    """The epoch after which ASHA may first stop a trial (the runner caps grace_period at max_epochs)."""
    return min(spec.scheduler.grace_period, spec.max_epochs)


def embed_ids(model: torch.nn.Module, ids: list[list[int]], pad_id: int, device: torch.device | None = None,
              batch_size: int = 128) -> torch.Tensor:
    """What the head reads [N, H (+ F)] (float32, CPU) of token-id sequences, dropout off (on the model's device):
    the pooled embeddings, and a hybrid head's molecular features (registered for the ids)."""
    import torch

    from trainables.batching import model_device, padded_batches

    model.eval()
    out = torch.empty(len(ids), model.config.input_size, dtype=torch.float32)
    with torch.no_grad():
        for chunk, input_ids, mask in padded_batches(ids, pad_id, batch_size, device or model_device(model)):
            out[torch.as_tensor(chunk)] = model.embed(input_ids, mask).float().cpu()
    return out


def write_selection_csv(path: Path, ctx: "SelectionContext", rows: np.ndarray, columns: dict[str, Any]) -> None:
    """Write the chosen candidate ``rows`` (id, smiles, target, source, extra columns) atomically."""
    import pandas as pd

    cand = ctx.candidates
    frame = pd.DataFrame({
        "candidate": rows,
        "id": [cand.ids[i] for i in rows],
        "smiles": [cand.smiles[i] for i in rows],
        "target": cand.targets[rows],
        "source": np.where(rows < ctx.n_train, "train", "pool"),
        **columns,
    })
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
