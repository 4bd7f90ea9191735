"""The pretraining corpus: molecules from a SMILES file or CSV column and from registered datasets,
canonicalized, deduplicated, guarded against leakage and split into train / valid / test.

Every row that cannot be used is reported with its line number (as for any dataset); the leakage guard
removes the molecules of the valid and test splits of the datasets the checkpoint will be fine-tuned on,
split exactly as those studies split them, and counts what it removed per dataset and split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from trainables.data.chem import canonicalize
from trainables.data.datasets import DATASETS, Dataset
from trainables.data.report import DataReport
from trainables.data.splits import split_indices
from trainables.data.tables import read_csv_columns
from trainables.errors import DataError

if TYPE_CHECKING:
    from trainables.spec import DatasetSpec

__all__ = ["Corpus", "CorpusSplits", "read_corpus_file", "draw_molecules", "held_out_molecules", "build_corpus",
           "corpus_hash"]


@dataclass
class Corpus:
    """Canonical molecules; ``rows`` are line numbers in ``sources`` (one source label per molecule)."""

    smiles: list[str] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.smiles)

    def extend(self, smiles: Iterable[str], rows: Iterable[int], source: str) -> None:
        for s, r in zip(smiles, rows):
            self.smiles.append(s)
            self.rows.append(r)
            self.sources.append(source)

    def merge(self, other: "Corpus") -> None:
        self.smiles += other.smiles
        self.rows += other.rows
        self.sources += other.sources


@dataclass
class CorpusSplits:
    """The corpus split into train and the held-out shares the pretraining metrics are measured on."""

    train: list[str]
    valid: list[str]
    test: list[str]
    hash: str  # corpus_hash of the three splits: part of the checkpoint's cache key


def read_corpus_file(path: str | Path, smiles_column: str = "smiles") -> tuple[Corpus, DataReport]:
    """Read a SMILES file (first field of each line; a ``smiles`` header line is skipped) or a CSV column.

    Rows are file line numbers; empty and invalid SMILES are reported, each with its line.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() == ".csv":
        frame = read_csv_columns(path, [smiles_column], "SMILES column (dataset.smiles_column)")
        records = [(i + 2, s) for i, s in enumerate(frame[smiles_column])]  # +2: 1-based, after the header
    else:
        if not path.is_file():
            raise DataError(f"{path}: file not found (dataset.path)")
        records = []
        for row, line in enumerate(path.read_text().splitlines(), start=1):
            first = line.split()[0] if line.split() else ""
            if row == 1 and first.lower() == "smiles":
                continue
            records.append((row, first))
    report = DataReport(source=str(path), n_rows=len(records))
    corpus = Corpus()
    for row, raw in records:
        if not raw.strip():
            report.add("empty SMILES", row)
            continue
        can = canonicalize(raw)
        if can is None:
            report.add("invalid SMILES", row, raw)
            continue
        corpus.extend([can], [row], str(path))
    return corpus, report


def _load_corpus(spec: "DatasetSpec") -> tuple[Corpus, DataReport]:
    """The ``corpus`` dataset: ``dataset.path`` read by :func:`read_corpus_file` (empty without a path)."""
    if not spec.path:
        return Corpus(), DataReport(source="(no dataset.path)")
    return read_corpus_file(spec.path, spec.smiles_column)


def _fragments(reactions: Sequence[str]) -> list[str]:
    return [frag for r in reactions for frag in r.split(".")]


def draw_molecules(spec: "DatasetSpec") -> tuple[Corpus, DataReport]:
    """Molecules of a registered dataset: a reaction dataset's TRAIN products and reactants (each reactant
    its own molecule), or every molecule of a molecule dataset (the leakage guard removes held-out ones)."""
    data, report = DATASETS.get(spec.name).load(spec)
    corpus = Corpus()
    if DATASETS.get(spec.name).kind == "reactions":
        train = data.train
        corpus.extend(train.products, train.rows, f"{spec.name} train products")
        rows = [row for r, row in zip(train.reactants, train.rows) for _ in r.split(".")]
        corpus.extend(_fragments(train.reactants), rows, f"{spec.name} train reactants")
    else:
        table = data.subset(range(min(spec.limit, len(data)))) if spec.limit else data
        corpus.extend(table.smiles, table.rows, spec.name)
    return corpus, report


def held_out_molecules(spec: "DatasetSpec") -> dict[str, set[str]]:
    """The valid and test molecules of a fine-tuning dataset, split as its study splits it.

    A reaction dataset contributes its valid/test products and every reactant; a molecule dataset is
    limited and split with the spec's ``split``, ``fractions`` and ``seed`` as ``prepare_property`` does.
    """
    data, _ = DATASETS.get(spec.name).load(spec)
    if DATASETS.get(spec.name).kind == "reactions":
        return {part: set(getattr(data, part).products) | set(_fragments(getattr(data, part).reactants))
                for part in ("valid", "test")}
    table = data.subset(range(min(spec.limit, len(data)))) if spec.limit else data
    parts = split_indices(table.smiles, spec.split, spec.fractions, spec.seed)
    return {part: {table.smiles[i] for i in parts[part]} for part in ("valid", "test")}


def corpus_hash(train: Sequence[str], valid: Sequence[str], test: Sequence[str]) -> str:
    """Order-independent content hash of the split corpus: equal hashes mean identical pretraining data."""
    digest = hashlib.sha256()
    for name, part in (("train", train), ("valid", valid), ("test", test)):
        digest.update(f"[{name}]\n".encode())
        for s in sorted(part):
            digest.update(f"{s}\n".encode())
    return digest.hexdigest()[:16]


def build_corpus(dataset: "DatasetSpec", draw_from: Sequence["DatasetSpec"], exclude: Sequence["DatasetSpec"]
                 ) -> tuple[CorpusSplits, list[DataReport]]:
    """Collect, deduplicate, guard and split the corpus.

    Returns:
        The splits and the reports: one per source (bad rows, checked against ``max_bad_fraction``), then
        the corpus report (duplicates and the leakage guard's removals per dataset and split; not checked,
        those rows are not bad).
    """
    corpus, reports = Corpus(), []
    own, report = _load_corpus(dataset)
    if dataset.path:
        report.check(dataset.max_bad_fraction)
        reports.append(report)
    corpus.extend(own.smiles, own.rows, dataset.path or "")
    for spec in draw_from:
        drawn, report = draw_molecules(spec)
        report.check(spec.max_bad_fraction)
        reports.append(report)
        corpus.merge(drawn)
    held = [(f"{spec.name} {part}", molecules) for spec in exclude for part, molecules in held_out_molecules(spec).items()]
    summary = DataReport(source="pretraining corpus", n_rows=len(corpus))
    seen: dict[str, tuple[str, int]] = {}
    keep: list[str] = []
    for smiles, row, source in zip(corpus.smiles, corpus.rows, corpus.sources):
        if smiles in seen:
            summary.add("duplicate molecule", row, f"{smiles} ({source}; first at {seen[smiles][0]} row {seen[smiles][1]})")
            continue
        seen[smiles] = (source, row)
        where = next((name for name, molecules in held if smiles in molecules), None)
        if where is not None:
            summary.add(f"leakage guard: in {where}", row, f"{smiles} ({source})")
            continue
        keep.append(smiles)
    reports.append(summary)
    if dataset.limit:
        keep = keep[: dataset.limit]
    if not keep:
        raise DataError(f"the pretraining corpus is empty\n{summary.summary()}")
    parts = split_indices(keep, dataset.split, dataset.fractions, dataset.seed)
    train, valid, test = ([keep[i] for i in parts[p]] for p in ("train", "valid", "test"))
    return CorpusSplits(train, valid, test, corpus_hash(train, valid, test)), reports


DATASETS.register(
    "corpus",
    Dataset("corpus", _load_corpus),
    help="pretraining corpus: dataset.path = a SMILES file or a CSV (dataset.smiles_column); more from "
         "registered datasets with the pretrain task's options.draw_from",
)
