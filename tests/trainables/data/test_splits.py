from __future__ import annotations

import numpy as np
import pytest

from studies.spec import DatasetSpec
from trainables.data.chem import murcko_scaffold
from trainables.data.datasets import DATASETS
from trainables.data.splits import SPLITTERS, split_hash, split_indices
from trainables.errors import DataError


@pytest.fixture(scope="module")
def nci() -> list[str]:
    table, _ = DATASETS.get("nci-logp").load(DatasetSpec(name="nci-logp"))
    return table.smiles[:1500]


@pytest.mark.parametrize("method", SPLITTERS.names())
def test_splits_partition_and_are_seeded(nci: list[str], method: str) -> None:
    fractions = {"valid": 0.1, "test": 0.1, "pool": 0.2}
    parts = split_indices(nci, method, fractions, seed=3)
    joined = np.concatenate(list(parts.values()))
    assert sorted(joined.tolist()) == list(range(len(nci)))  # disjoint and complete
    for name, share in fractions.items():
        assert abs(len(parts[name]) - share * len(nci)) <= 0.02 * len(nci)
    again = split_indices(nci, method, fractions, seed=3)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    other = split_indices(nci, method, fractions, seed=4)
    assert not np.array_equal(parts["test"], other["test"])


def test_scaffold_groups_never_straddle_splits(nci: list[str]) -> None:
    parts = split_indices(nci, "scaffold", {"valid": 0.1, "test": 0.1}, seed=0)
    owner = {}
    for name, idx in parts.items():
        for i in idx:
            scaffold = murcko_scaffold(nci[i])
            assert owner.setdefault(scaffold, name) == name


def test_split_hash_is_order_independent_and_content_sensitive() -> None:
    a = split_hash(["CCO", "CCN"], np.array([1.0, 2.0]))
    assert a == split_hash(["CCN", "CCO"], np.array([2.0, 1.0]))
    assert a != split_hash(["CCO", "CCN"], np.array([1.0, 2.5]))


def test_too_little_data_for_a_split_is_an_error() -> None:
    with pytest.raises(DataError, match="left 'valid' empty"):
        split_indices(["CCO", "CCN", "CCC"], "random", {"valid": 0.1}, seed=0)
