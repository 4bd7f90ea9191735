"""Teacher-label mixing (gamma): replace a seeded share of the training labels with a teacher's prediction.

Teacher predictions come from a CSV (``product,prediction``), from an MLflow model URI or from a saved
retro model folder (the teacher stage's cached checkpoint), which chemtune runs once on the train products
and caches. Invalid teacher outputs are never used and are counted; products without a teacher prediction
are counted too.

A teacher chemtune trains itself must not label the rows it trained on: it would echo its own training
labels (self-distillation). :func:`split_for_teacher` splits the train split, seeded and disjoint by
product, into the teacher's share and the student's; the student trains on its share alone, so every
teacher label is a genuine prediction on a product the teacher never saw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainables.cache import cache_dir
from trainables.data.report import DataReport
from trainables.data.tables import read_csv_columns, report_long_lines
from trainables.errors import DataError
from trainables.inputs import long_reason, too_long
from trainables.io import atomic_path
from trainables.retro.data import Reactions, canonical_set

__all__ = ["check_coverage", "TeacherLabels", "Mixed", "TeacherSplit", "split_for_teacher", "teacher_from_csv",
           "teacher_from_model", "mix_labels", "teacher_top1"]


@dataclass
class TeacherLabels:
    """Teacher predictions aligned with the train rows.

    Attributes:
        predictions: Canonical teacher reactants per train row; ``None`` where unusable.
        report: Why rows are unusable (``no teacher prediction``, ``invalid teacher prediction``).
        source: The CSV path or model URI.
    """

    predictions: list[str | None]
    report: DataReport
    source: str

    @property
    def eligible(self) -> np.ndarray:
        """Train rows whose teacher prediction is usable."""
        return np.asarray([i for i, p in enumerate(self.predictions) if p is not None], dtype=np.int64)


def _align(products: Sequence[str], rows: Sequence[int], table: dict[str, str], source: str) -> TeacherLabels:
    report = DataReport(source=f"teacher {source}", n_rows=len(products))
    out: list[str | None] = []
    for product, row in zip(products, rows):
        if product not in table:
            report.add("no teacher prediction", row, product)
            out.append(None)
            continue
        can = canonical_set(table[product])
        if can is None:
            report.add("invalid teacher prediction", row, table[product])
        out.append(can)
    return TeacherLabels(out, report, source)


def teacher_from_csv(path: str | Path, products: Sequence[str], rows: Sequence[int]) -> TeacherLabels:
    """Teacher predictions from a CSV with columns ``product`` and ``prediction``.

    Args:
        path: The CSV; its products are canonicalized to match the train products.
        products: Canonical train products.
        rows: Their source line numbers (for the report).
    """
    # checked and read in bounded memory; an over-long line is a bad row (read_csv_columns)
    frame = read_csv_columns(path, ["product", "prediction"], "column(s) (options.teacher_csv)",
                             file_kind="teacher CSV")
    path = Path(path)
    table: dict[str, str] = {}
    bad = DataReport(source=str(path), n_rows=len(frame))
    for row, product, prediction in zip(frame.attrs["lines"], frame["product"], frame["prediction"]):
        if too_long(product) or too_long(prediction):
            bad.add(long_reason(), row, product)
            continue
        can = canonical_set(product)
        if can is None:
            bad.add("invalid product SMILES", row, product)
            continue
        table.setdefault(can, prediction)
    report_long_lines(bad, frame)
    labels = _align(products, rows, table, str(path))
    for reason, entry in bad.issues.items():  # bad CSV lines are reported, not silently skipped
        labels.report.issues[f"{path.name}: {reason}"] = entry
    return labels


def teacher_from_model(uri: str, products: Sequence[str], rows: Sequence[int], batch_size: int = 64,
                       beams: int = 1) -> TeacherLabels:
    """Run a teacher model on the train products; cached per (model, beams, products).

    ``uri`` is an MLflow model URI or a saved retro model folder (one holding ``retro.json``: the teacher
    stage's cached checkpoint, run without MLflow). A chemtune retro model is called directly: with
    ``beams`` 1 its greedy top-1, else its first valid candidate among ``beams`` beams (an invalid top-1
    falls back to the next candidate, as a chemist reading the list would). Any other pyfunc gets a
    DataFrame with a ``product`` column and must return ``prediction_1`` or ``prediction`` (else its
    first column).
    """
    from trainables.retro.predictor import RetroPredictor

    key = [uri, *products] if beams == 1 else [uri, f"beams={beams}", *products]
    digest = hashlib.sha256(("\n".join(key)).encode()).hexdigest()[:24]
    cached = cache_dir() / "teacher" / f"{digest}.csv"
    if not cached.is_file():
        frame = pd.DataFrame({"product": list(products)})
        if (Path(uri) / "retro.json").is_file():
            predictor = RetroPredictor.load(uri)
        else:
            predictor, model = _load_pyfunc(uri)
        if predictor is not None:
            import torch

            if torch.cuda.is_available():  # a driver with a GPU labels tens of thousands of products in minutes
                predictor.model.to("cuda")
            out = predictor.predict(list(products), num_beams=beams, top_k=beams, batch_size=batch_size)
            ranked = out[[c for c in (f"prediction_{k + 1}" for k in range(beams)) if c in out.columns]]
            frame["prediction"] = [next((c for c in row if canonical_set(c)), row[0])
                                   for row in ranked.fillna("").astype(str).to_numpy()]
        else:
            out = pd.DataFrame(model.predict(frame))
            column = next((c for c in ("prediction_1", "prediction") if c in out.columns), out.columns[0])
            frame["prediction"] = out[column].fillna("").astype(str).to_numpy()
        with atomic_path(cached) as tmp:
            frame.to_csv(tmp, index=False)
    frame = pd.read_csv(cached, dtype=str, keep_default_na=False)
    return _align(products, rows, dict(zip(frame["product"], frame["prediction"])), uri)


def _load_pyfunc(uri: str) -> tuple[Any, Any]:
    """``(retro predictor or None, the pyfunc)`` of an MLflow model URI; a bad URI is one line naming it."""
    import mlflow.pyfunc

    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as err:  # noqa: BLE001 - MLflow raises many kinds; the user needs the URI
        raise DataError(f"could not load the teacher model {uri!r} (options.teacher_uri): {err}") from err
    from trainables.retro.serving import RetroPyfunc

    inner = model.unwrap_python_model() if hasattr(model, "unwrap_python_model") else None
    return (inner.predictor if isinstance(inner, RetroPyfunc) else None), model


@dataclass
class TeacherSplit:
    """The train split cut in two for a teacher chemtune trains itself: disjoint by product.

    Attributes:
        teacher: The reactions the teacher trains on.
        student: The rest: the student trains on them, labelled by the teacher that never saw them.
    """

    teacher: Reactions
    student: Reactions

    def counts(self) -> dict[str, int]:
        """Rows and distinct products on each side (the study's data summary)."""
        return {"teacher_share_rows": len(self.teacher), "student_share_rows": len(self.student),
                "teacher_share_products": len(set(self.teacher.products)),
                "student_share_products": len(set(self.student.products))}


def split_for_teacher(train: Reactions, share: float, seed: int) -> TeacherSplit:
    """Split ``train`` into the teacher's share and the student's, seeded and disjoint by product.

    Whole products go to one side (a product listed twice with other reactants never lands on both), so
    the teacher never saw a product it labels. The split depends on the set of reactions and the seed,
    not on their order: the distinct products are sorted, shuffled by ``seed``, and the first
    ``round(share * products)`` go to the teacher.

    Args:
        train: The train split (canonical products).
        share: Share of the distinct products the teacher trains on, in (0, 1).
        seed: Seed of the shuffle.
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"teacher share must be in (0, 1), got {share}")
    products = sorted(set(train.products))
    k = int(round(share * len(products)))
    if k == 0 or k == len(products):
        raise DataError(f"options.teacher_share {share:g} of {len(products)} distinct train products leaves "
                        f"{'the teacher' if k == 0 else 'the student'} no reaction; give more reactions or another share")
    order = np.random.default_rng(seed).permutation(len(products))
    taught = {products[i] for i in order[:k]}
    side = [p in taught for p in train.products]
    return TeacherSplit(train.subset(i for i, t in enumerate(side) if t),
                        train.subset(i for i, t in enumerate(side) if not t))


@dataclass
class Mixed:
    """Training labels after mixing; ``replaced`` are the train row indices that got the teacher's label."""

    labels: list[str]
    replaced: np.ndarray
    n_eligible: int


def mix_labels(labels: Sequence[str], teacher: TeacherLabels | None, gamma: float, seed: int,
               shortfall: float = 0.0) -> Mixed:
    """Replace ``round(gamma * len(labels))`` seeded-random train labels with the teacher's prediction.

    gamma is the share of ALL training examples, as the retrosynthesis report defines it; the rows
    replaced are drawn among those the teacher has a usable label for. A teacher covering fewer rows
    than gamma needs is refused, naming the numbers (a share of the usable rows alone made gamma 1.0
    replace 0.5% of the labels with a teacher covering 200 of 40,029 products).

    Args:
        labels: The true train reactants.
        teacher: Teacher predictions aligned with ``labels`` (``None``: no teacher, nothing replaced).
        gamma: Share of the train labels to replace, in [0, 1].
        seed: Seed of the choice of rows.
        shortfall: Share of ALL train rows gamma may fall short by (options.gamma_shortfall): within it, every
            usable teacher label replaces its row and ``len(replaced) / len(labels)`` says the share reached.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if teacher is None:
        if gamma > 0:
            raise ValueError("gamma > 0 needs a teacher (options.teacher_csv or options.teacher_uri)")
        return Mixed(list(labels), np.zeros(0, dtype=np.int64), 0)
    if len(teacher.predictions) != len(labels):
        raise ValueError(f"{len(teacher.predictions)} teacher predictions for {len(labels)} labels")
    eligible = teacher.eligible
    n = int(round(gamma * len(labels)))
    check_coverage(gamma, len(labels), len(eligible), shortfall)
    chosen = np.sort(np.random.default_rng(seed).permutation(eligible)[:n]) if n else np.zeros(0, dtype=np.int64)
    out = list(labels)
    for i in chosen:
        out[i] = teacher.predictions[i]  # type: ignore[assignment]
    return Mixed(out, chosen, len(eligible))


def check_coverage(gamma: float, n_train: int, n_usable: int, shortfall: float = 0.0) -> None:
    """Raise ``ValueError`` naming the numbers when ``gamma`` needs more teacher labels than there are
    (beyond ``shortfall``, a share of ALL train rows that may keep their true label for want of a usable one)."""
    need = int(round(gamma * n_train))
    if need - n_usable > shortfall * n_train + 1e-9:
        allowed = f" (options.gamma_shortfall {shortfall:g} allows {int(shortfall * n_train)} short)" if shortfall else ""
        raise ValueError(f"gamma {gamma:g} replaces {need} of the {n_train} train labels, but the teacher has a "
                         f"usable label for only {n_usable} train products (at most gamma "
                         f"{n_usable / max(n_train, 1):.4f}){allowed}; give a teacher that covers more of the train split")


def teacher_top1(labels: Sequence[str], teacher: TeacherLabels) -> float:
    """The teacher's own top-1 on the train rows: share of ALL rows whose teacher label is the true one.

    Both sides are canonical reactant sets (the data loader and the teacher alignment canonicalize),
    so string equality is molecule-set equality. A missing or invalid teacher label counts as wrong.
    """
    if len(teacher.predictions) != len(labels):
        raise ValueError(f"{len(teacher.predictions)} teacher predictions for {len(labels)} labels")
    hits = sum(p is not None and p == canonical_set(t) for p, t in zip(teacher.predictions, labels))
    return hits / max(len(labels), 1)
