"""RDKit helpers: canonical SMILES, scaffolds and cheap descriptors."""

from __future__ import annotations

from rdkit import Chem, RDLogger
from rdkit.Chem.Scaffolds import MurckoScaffold

from trainables.inputs import too_long

__all__ = ["canonicalize", "canonicalize_or_raise", "murcko_scaffold", "mol_from_smiles"]

RDLogger.DisableLog("rdApp.*")  # bad rows are reported by chemtune, not printed by RDKit


def mol_from_smiles(smiles: str) -> Chem.Mol | None:
    """Parse a SMILES string; ``None`` when RDKit rejects it, it is empty or over the length limit."""
    if not isinstance(smiles, str) or not smiles.strip() or too_long(smiles):  # RDKit's memory grows with length
        return None
    return Chem.MolFromSmiles(smiles.strip())


def canonicalize(smiles: str) -> str | None:
    """RDKit canonical SMILES (isomeric), or ``None`` for an invalid or empty string."""
    mol = mol_from_smiles(smiles)
    return None if mol is None else Chem.MolToSmiles(mol)


def canonicalize_or_raise(smiles: str) -> str:
    """Like :func:`canonicalize` but raise ``ValueError`` for an invalid string."""
    out = canonicalize(smiles)
    if out is None:
        raise ValueError(f"invalid SMILES {smiles!r}")
    return out


def murcko_scaffold(smiles: str) -> str:
    """Bemis-Murcko scaffold SMILES (empty string for acyclic molecules)."""
    mol = mol_from_smiles(smiles)
    if mol is None:
        raise ValueError(f"invalid SMILES {smiles!r}")
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)
