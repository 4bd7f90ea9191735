"""Dataset registry: each entry loads validated rows and a report of what it excluded.

The loaders import pandas and RDKit (``trainables.data.tables``) when they run, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from trainables.cache import cache_dir, data_dir, download
from trainables.data.report import DataReport
from trainables.errors import DataError
from trainables.registry import Registry

if TYPE_CHECKING:
    from trainables.data.tables import MoleculeTable

__all__ = ["CRIPPEN_LOGP_DESCRIPTORS", "DATASETS", "Dataset", "DatasetSection", "LIPOPHILICITY_URL", "resolve_file"]


class DatasetSection(Protocol):
    """What a loader reads of a study's ``dataset:`` section, a :class:`trainables.spec.DatasetSpec`.

    The schema imports this module (it checks that ``dataset.name`` is registered here), so this module
    names the fields it reads instead of importing the schema back (``backbones.ModelSection`` likewise).
    """

    name: str
    path: str | None
    smiles_column: str
    target_column: str
    id_column: str | None
    split: str
    seed: int
    fractions: dict[str, float]
    limit: int | None

LIPOPHILICITY_URL = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/Lipophilicity.csv"

# RDKit 2D descriptors computed from Crippen's per-atom logP contributions: MolLogP is their sum (the
# nci-logp label itself), SlogP_VSA1-12 bin the same contributions by value. A feature-based baseline
# given these reads the label instead of learning it.
CRIPPEN_LOGP_DESCRIPTORS: tuple[str, ...] = ("MolLogP", *(f"SlogP_VSA{i}" for i in range(1, 13)))


@dataclass(frozen=True)
class Dataset:
    """A registered dataset.

    Attributes:
        kind: ``"molecules"`` (SMILES + label) or ``"reactions"``; tasks accept one kind.
        load: ``DatasetSection -> (data, DataReport)``.
        label_descriptors: RDKit descriptor names (``Descriptors.CalcMolDescriptors`` keys) the label is
            computed from, for a computed-label dataset; feature-based baselines leave them out.
    """

    kind: str
    load: Callable[[DatasetSection], tuple[Any, DataReport]]
    label_descriptors: tuple[str, ...] = ()


DATASETS: Registry[Dataset] = Registry("dataset")


def resolve_file(spec_path: str | None, relative: str, url: str | None) -> Path:
    """Find a data file: the study's path, then ``$CHEMTUNE_DATA_DIR/relative``, then a cached download."""
    if spec_path:
        path = Path(spec_path).expanduser()
        if not path.exists():
            raise DataError(f"{path}: file not found (dataset.path)")
        return path
    root = data_dir()
    if root is not None and (root / relative).exists():
        return root / relative
    cached = cache_dir() / "data" / relative
    if cached.exists():
        return cached
    if url is None:
        raise DataError(f"{relative}: not found; set dataset.path or CHEMTUNE_DATA_DIR")
    try:
        return download(url, cached)
    except OSError as err:
        where = f"$CHEMTUNE_DATA_DIR/{relative}" if root else "CHEMTUNE_DATA_DIR"
        raise DataError(
            f"{relative}: not found locally and the download from {url} failed ({err}); "
            f"set dataset.path or {where}"
        ) from err


def _load_lipophilicity(spec: DatasetSection) -> tuple[MoleculeTable, DataReport]:
    from trainables.data.tables import read_property_csv

    path = resolve_file(spec.path, "lipophilicity/Lipophilicity.csv", LIPOPHILICITY_URL)
    table, report = read_property_csv(path, "smiles", "exp", "CMPD_CHEMBLID")
    if report.n_rows != 4200:  # the MoleculeNet file; anything else is a broken download
        raise DataError(f"{path}: expected the 4200 rows of MoleculeNet Lipophilicity, found {report.n_rows}")
    return table, report


def _load_nci_logp(spec: DatasetSection) -> tuple[MoleculeTable, DataReport]:
    from rdkit import RDConfig
    from rdkit.Chem import Crippen

    from trainables.data.chem import mol_from_smiles
    from trainables.data.tables import table_from_records
    from trainables.inputs import check_file, long_reason, read_lines

    path = check_file(Path(spec.path) if spec.path else Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi", ".smi file")
    records, long_lines = [], []
    for row, line, size in read_lines(path):
        if line is None:  # over the limit: counted below, never parsed
            long_lines.append((row, size))
            continue
        parts = line.split()
        if not parts:
            continue
        smiles, ident = parts[0], (parts[1] if len(parts) > 1 else str(row))
        mol = mol_from_smiles(smiles)
        label = Crippen.MolLogP(mol) if mol is not None else 0.0  # invalid rows are reported below
        records.append((row, smiles, label, ident))
    table, report = table_from_records(records, source=str(path))
    report.n_rows += len(long_lines)
    for row, size in long_lines:
        report.add(long_reason(), row, f"a {size:,}-byte line")
    return table, report


def _load_csv(spec: DatasetSection) -> tuple[MoleculeTable, DataReport]:
    from trainables.data.tables import read_property_csv

    if not spec.path:
        raise DataError("dataset 'csv' needs dataset.path")
    return read_property_csv(spec.path, spec.smiles_column, spec.target_column, spec.id_column)


DATASETS.register(
    "lipophilicity",
    Dataset("molecules", _load_lipophilicity),
    help="MoleculeNet Lipophilicity (4200 ChEMBL logD values); path, $CHEMTUNE_DATA_DIR or download",
)
DATASETS.register(
    "nci-logp",
    Dataset("molecules", _load_nci_logp, label_descriptors=CRIPPEN_LOGP_DESCRIPTORS),
    help="offline proxy task: RDKit's 5000 NCI molecules labelled with Crippen logP",
)
DATASETS.register(
    "csv",
    Dataset("molecules", _load_csv),
    help="any CSV: dataset.path, smiles_column, target_column",
)
# The pretraining corpus (the pretrain task's dataset), imported on first use; trainables.pretrain.corpus registers it.
DATASETS.register_lazy(
    "corpus", "trainables.pretrain.corpus",
    help="pretraining corpus: dataset.path = a SMILES file or a CSV (dataset.smiles_column); more from "
         "registered datasets with the pretrain task's options.draw_from",
)
# The reaction datasets (retrosynthesis), imported on first use; trainables.retro.data registers them.
DATASETS.register_lazy(
    "uspto50k", "trainables.retro.data",
    help="USPTO-50K retrosynthesis (train/valid/test .smi, 'product >> reactants'); limit = first N per split",
)
DATASETS.register_lazy(
    "reactions-csv", "trainables.retro.data",
    help="any CSV with a 'reactants>>product' column (dataset.smiles_column), split by dataset.split",
)
