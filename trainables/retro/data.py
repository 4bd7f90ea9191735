"""Reactions for retrosynthesis: reading, RDKit canonicalization, randomized-SMILES augmentation.

Both sides are canonicalized with RDKit; a multi-fragment side is written as its canonical
fragments sorted and joined by ``.``, so equal reactant sets give equal strings. Every line that
cannot be used is reported with its line number and reason (never silently dropped).
"""

from __future__ import annotations

import hashlib
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rdkit import Chem

from trainables.cache import cache_dir, data_dir, download
from trainables.data.chem import mol_from_smiles
from trainables.data.datasets import DATASETS, Dataset
from trainables.data.report import DataReport
from trainables.data.splits import split_indices
from trainables.data.tables import read_csv_columns, report_long_lines
from trainables.errors import DataError
from trainables.inputs import check_file, long_reason, read_lines, too_long
from trainables.io import atomic_path

if TYPE_CHECKING:
    from trainables.spec import DatasetSpec

__all__ = [
    "Reactions", "ReactionSplits", "canonical_set", "read_smi", "read_reaction_csv",
    "randomize_smiles", "reactions_hash", "USPTO50K_URL",
]

USPTO50K_URL = "https://raw.githubusercontent.com/bigchem/retrosynthesis/master/data/retrosynthesis-{split}.smi"
SPLITS = ("train", "valid", "test")


def canonical_set(smiles: str | None) -> str | None:
    """Canonical SMILES of each ``.``-fragment, sorted and joined; ``None`` if any fragment is invalid.

    Args:
        smiles: One molecule or a set of molecules separated by ``.``.

    Returns:
        The order-independent canonical form, or ``None`` for an empty or invalid string.
    """
    if not isinstance(smiles, str) or not smiles.strip():
        return None
    parts = []
    for frag in smiles.strip().split("."):
        mol = mol_from_smiles(frag)
        if mol is None:
            return None
        parts.append(Chem.MolToSmiles(mol))
    return ".".join(sorted(parts))


def randomize_smiles(smiles: str, rng: random.Random) -> str:
    """A random (non-canonical) SMILES of the same molecule set; fragment order shuffled too."""
    frags = []
    for frag in smiles.split("."):
        mol = Chem.MolFromSmiles(frag)
        if mol is None:  # canonical inputs are always valid; keep a bad one unchanged
            frags.append(frag)
            continue
        frags.append(Chem.MolToRandomSmilesVect(mol, 1, randomSeed=rng.randrange(1, 2**31))[0])
    rng.shuffle(frags)
    return ".".join(frags)


@dataclass
class Reactions:
    """Canonical products and reactant sets; ``rows`` are the source line numbers."""

    products: list[str]
    reactants: list[str]
    rows: list[int]
    source: str = ""

    def __len__(self) -> int:
        return len(self.products)

    def subset(self, index) -> "Reactions":  # noqa: ANN001 - any int sequence
        index = list(index)
        return Reactions([self.products[i] for i in index], [self.reactants[i] for i in index],
                         [self.rows[i] for i in index], self.source)

    def head(self, n: int | None) -> "Reactions":
        """The first ``n`` reactions (all when ``n`` is ``None``)."""
        return self if n is None else self.subset(range(min(n, len(self))))


@dataclass
class ReactionSplits:
    """Train / valid / test reactions and one report per source file."""

    train: Reactions
    valid: Reactions
    test: Reactions
    reports: list[DataReport] = field(default_factory=list)


def reactions_hash(data: Reactions) -> str:
    """Order-independent content hash: equal hashes mean identical reactions."""
    digest = hashlib.sha256()
    for p, r in sorted(zip(data.products, data.reactants)):
        digest.update(f"{r}>>{p}\n".encode())
    return digest.hexdigest()[:16]


def _validate(records: list[tuple[int, str, str]], source: str) -> tuple[Reactions, DataReport]:
    """``(line, product, reactants)`` records -> canonical reactions and the report of excluded lines."""
    report = DataReport(source=source, n_rows=len(records))
    out = Reactions([], [], [], source)
    for row, product, reactants in records:
        if too_long(product) or too_long(reactants):  # RDKit never sees it
            report.add(long_reason(), row, product if too_long(product) else reactants)
            continue
        p, r = canonical_set(product), canonical_set(reactants)
        if p is None:
            report.add("invalid product SMILES", row, product)
        elif r is None:
            report.add("invalid reactants SMILES", row, reactants)
        else:
            out.products.append(p)
            out.reactants.append(r)
            out.rows.append(row)
    return out, report


def read_smi(path: str | Path, cache: bool = True) -> tuple[Reactions, DataReport]:
    """Read a USPTO-50K style file: one ``product >> reactants`` per line (blank lines skipped).

    Args:
        path: The ``.smi`` file.
        cache: Reuse the canonicalized result cached for identical file contents (RDKit on
            40k reactions takes a minute; the cache key is the file's SHA-256).

    Returns:
        The reactions and a report; malformed lines (no ``>>``, an empty side) are counted by line number.
    """
    path = check_file(path, ".smi file")
    with open(path, "rb") as handle:  # streamed: the file is never held whole
        key = hashlib.file_digest(handle, "sha256").hexdigest()[:24]
    cached = cache_dir() / "canonical" / f"{key}.pkl"
    if cache and cached.is_file():
        reactions, report = pickle.loads(cached.read_bytes())
        reactions.source = report.source = str(path)
        return reactions, report
    reactions, report = _read_smi(path)
    if cache:
        with atomic_path(cached) as tmp:
            tmp.write_bytes(pickle.dumps((reactions, report)))
    return reactions, report


def _read_smi(path: Path) -> tuple[Reactions, DataReport]:
    records, malformed, long_lines = [], [], []
    for row, line, size in read_lines(path):
        if line is None:  # over the limit: counted below, never parsed
            long_lines.append((row, size))
            continue
        if not line.strip():
            continue
        product, sep, reactants = line.partition(">>")
        if not sep or not product.strip() or not reactants.strip():
            malformed.append((row, line))
            continue
        records.append((row, product.strip(), reactants.strip()))
    reactions, report = _validate(records, str(path))
    report.n_rows += len(malformed) + len(long_lines)
    for row, line in malformed:
        report.add("malformed line (want 'product >> reactants')", row, line)
    for row, size in long_lines:
        report.add(long_reason(), row, f"a {size:,}-byte line")
    return reactions, report


def read_reaction_csv(path: str | Path, column: str) -> tuple[Reactions, DataReport]:
    """Read reactions ``reactants>>product`` (optionally ``reactants>agents>product``) from a CSV column.

    Args:
        path: The CSV file.
        column: The column holding the reaction SMILES.
    """
    path = Path(path)
    frame = read_csv_columns(path, [column], "reaction column (dataset.smiles_column)")
    records, malformed = [], []
    for row, rxn in zip(frame.attrs["lines"], frame[column]):
        parts = rxn.strip().split(">")
        if len(parts) != 3 or not parts[0].strip() or not parts[2].strip():
            malformed.append((row, rxn))
            continue
        records.append((row, parts[2].strip(), parts[0].strip()))
    reactions, report = _validate(records, str(path))
    report.n_rows += len(malformed)
    for row, rxn in malformed:
        report.add("malformed reaction (want 'reactants>>product')", row, rxn)
    report_long_lines(report, frame)
    return reactions, report


def _uspto_file(spec: "DatasetSpec", split: str) -> Path:
    if spec.path:
        path = Path(spec.path).expanduser() / f"{split}.smi"
        if not path.is_file():
            raise DataError(f"{path}: file not found (dataset.path must hold train.smi, valid.smi, test.smi)")
        return path
    root = data_dir()
    if root is not None and (root / "uspto50k" / f"{split}.smi").is_file():
        return root / "uspto50k" / f"{split}.smi"
    cached = cache_dir() / "data" / "uspto50k" / f"{split}.smi"
    url = USPTO50K_URL.format(split=split)
    try:
        return download(url, cached)
    except OSError as err:
        raise DataError(
            f"uspto50k/{split}.smi: not found locally and the download from {url} failed ({err}); "
            "set dataset.path or CHEMTUNE_DATA_DIR"
        ) from err


def _combined(reports: list[DataReport], source: str) -> DataReport:
    """One report over several files; reasons carry the file name so line numbers stay meaningful."""
    out = DataReport(source=source, n_rows=sum(r.n_rows for r in reports))
    for rep in reports:
        name = Path(rep.source).name
        for reason, entry in rep.issues.items():
            out.issues[f"{name}: {reason}"] = entry
    return out


def _load_uspto50k(spec: "DatasetSpec") -> tuple[ReactionSplits, DataReport]:
    parts, reports = {}, []
    for split in SPLITS:
        reactions, report = read_smi(_uspto_file(spec, split))
        parts[split] = reactions.head(spec.limit)
        reports.append(report)
    source = spec.path or "uspto50k"
    return ReactionSplits(**parts, reports=reports), _combined(reports, source)


def _load_reactions_csv(spec: "DatasetSpec") -> tuple[ReactionSplits, DataReport]:
    if not spec.path:
        raise DataError("dataset 'reactions-csv' needs dataset.path (a CSV with a reactants>>product column)")
    reactions, report = read_reaction_csv(spec.path, spec.smiles_column)
    reactions = reactions.head(spec.limit)
    if len(reactions) == 0:
        raise DataError(f"no usable reactions\n{report.summary()}")
    idx = split_indices(reactions.products, spec.split, spec.fractions, spec.seed)
    return (
        ReactionSplits(reactions.subset(idx["train"]), reactions.subset(idx["valid"]),
                       reactions.subset(idx["test"]), [report]),
        report,
    )


DATASETS.register(
    "uspto50k",
    Dataset("reactions", _load_uspto50k),
    help="USPTO-50K retrosynthesis (train/valid/test .smi, 'product >> reactants'); limit = first N per split",
)
DATASETS.register(
    "reactions-csv",
    Dataset("reactions", _load_reactions_csv),
    help="any CSV with a 'reactants>>product' column (dataset.smiles_column), split by dataset.split",
)
