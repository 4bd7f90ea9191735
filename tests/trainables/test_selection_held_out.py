"""Held-out data stays held out of selection (issue 10, item 6).

Influence minimises the loss on a target carved from train (never valid, which ranks the trials), and
under a scaffold split no pool molecule brings a valid/test scaffold back into training.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from studies.spec import parse_study
from tests.conftest import tiny_selection_study
from trainables import NullReporter
from trainables.data.chem import murcko_scaffold
from trainables.data.tables import MoleculeTable
from trainables.errors import StudyError
from trainables.property.task import PropertyTrainer, prepare_property
from trainables.selection.influence import influence_target

CONFIG = {"selection": "influence", "batch_size": 32, "lr": 1e-3, "lissa_depth": 10, "head_hidden": 16, "top_k": 12}


def _with_targets(table: MoleculeTable, targets: np.ndarray) -> MoleculeTable:
    return MoleculeTable(table.smiles, targets, table.ids, table.rows)


def _select(data, spec, cache, monkeypatch, record=None):
    """Run influence selection on a fresh trial (own score cache); return the selector."""
    monkeypatch.setenv("CHEMTUNE_CACHE", str(cache))
    trainer = PropertyTrainer(dict(CONFIG), data, spec)
    if record is not None:  # the rows phase 1 trains on
        phase1 = trainer.phase1
        trainer.phase1 = lambda epochs, rows=None: (record.append(np.asarray(rows)), phase1(epochs, rows))[1]
    trainer.selector.setup(trainer.selection_context(), NullReporter())
    return trainer.selector


@pytest.fixture(scope="module")
def prepared():
    spec = parse_study(tiny_selection_study("influence", limit=300, max_epochs=2, top_k=12))
    return spec, prepare_property(spec)


def test_the_target_is_train_rows_held_out_of_both_phases_and_reported(prepared, tmp_path, monkeypatch):
    spec, prep = prepared
    data = prep.payload
    phase1_rows: list[np.ndarray] = []
    sel = _select(data, spec, tmp_path / "cache", monkeypatch, phase1_rows)
    n_train = len(data.train)
    target = sel.target
    assert len(target) == round(0.1 * n_train) == prep.summary["n_influence_target"]  # study parameter
    assert sel.stats["influence_target_rows"] == len(target)
    assert target.min() >= 0 and target.max() < n_train  # carved from train
    target_smiles = {data.train.smiles[i] for i in target}
    assert not target_smiles & (set(data.valid.smiles) | set(data.test.smiles))
    trained = [phase1_rows[0]] + [sel.indices(e) for e in range(spec.max_epochs)]
    assert len(phase1_rows) == 1 and len(phase1_rows[0]) == n_train - len(target)
    cand = [*data.train.smiles, *data.pool.smiles]
    for rows in trained:  # neither phase 1 nor phase 3 sees a target molecule
        assert not set(rows.tolist()) & set(target.tolist())
        assert not {cand[i] for i in rows} & target_smiles
    assert len(trained[1]) == n_train - len(target) + 12
    assert {cand[i] for i in sel.selected} <= set(data.pool.smiles)


def test_influence_scores_follow_the_target_labels_not_valid(prepared, tmp_path, monkeypatch):
    spec, prep = prepared
    data = prep.payload
    base = _select(data, spec, tmp_path / "a", monkeypatch)
    rng = np.random.default_rng(7)
    # valid labels scrambled and shifted: the scores (and so the selection) do not move at all
    noisy_valid = replace(data, valid=_with_targets(data.valid, rng.permutation(data.valid.targets) + 3.0))
    same = _select(noisy_valid, spec, tmp_path / "b", monkeypatch)
    np.testing.assert_array_equal(same.selected, base.selected)
    np.testing.assert_allclose(same.scores, base.scores, rtol=1e-6)
    # the target's labels permuted among its own rows: train mean/std and phase 1 unchanged, scores differ
    target = base.target
    y = data.train.targets.copy()
    y[target] = y[target][rng.permutation(len(target))]
    moved = _select(replace(data, train=_with_targets(data.train, y)), spec, tmp_path / "c", monkeypatch)
    np.testing.assert_array_equal(moved.target, target)
    assert not np.allclose(moved.scores, base.scores, rtol=1e-3)
    assert set(moved.selected.tolist()) != set(base.selected.tolist())


def test_a_pool_copy_of_a_target_molecule_is_never_selected(prepared, tmp_path, monkeypatch):
    spec, prep = prepared
    data = prep.payload
    target = influence_target(data.train.smiles, 0.1, spec.dataset.split, spec.seed)
    copies = data.train.subset(target[:5])
    pool = MoleculeTable(data.pool.smiles + copies.smiles, np.concatenate([data.pool.targets, copies.targets]),
                         data.pool.ids + copies.ids, data.pool.rows + copies.rows)
    sel = _select(replace(data, pool=pool), spec, tmp_path / "cache", monkeypatch)
    chosen = {pool.smiles[i - len(data.train)] for i in sel.selected}
    assert sel.stats["influence_pool_in_target"] == 5 and not chosen & set(copies.smiles)


def test_under_a_scaffold_split_the_target_is_carved_by_scaffold(prepared):
    spec, prep = prepared
    smiles = prep.payload.train.smiles  # ~200 NCI molecules, many scaffolds
    target = influence_target(smiles, 0.1, "scaffold", 0)
    rest = np.setdiff1d(np.arange(len(smiles)), target)
    assert abs(len(target) - 0.1 * len(smiles)) <= 1
    assert not {murcko_scaffold(smiles[i]) for i in target} & {murcko_scaffold(smiles[i]) for i in rest}
    np.testing.assert_array_equal(target, influence_target(smiles, 0.1, "scaffold", 0))  # seeded


@pytest.mark.parametrize("fraction", [0, 0.6])
def test_a_target_fraction_out_of_bounds_fails_when_the_study_is_read(fraction):
    with pytest.raises(StudyError, match="influence_target_fraction"):
        parse_study(tiny_selection_study("influence", limit=300, max_epochs=2, influence_target_fraction=fraction))


# -- scaffold leakage of an external pool ----------------------------------------------------------

# Five scaffolds, four molecules each: a 20%/20% scaffold split puts exactly one scaffold in valid and one
# in test (every group is larger than half a held-out split), the other three in train.
FAMILIES = {
    "benzene": ["Cc1ccccc1", "Oc1ccccc1", "Nc1ccccc1", "Clc1ccccc1"],
    "pyridine": ["Cc1ccncc1", "Oc1ccncc1", "Nc1ccncc1", "Clc1ccncc1"],
    "cyclohexane": ["CC1CCCCC1", "OC1CCCCC1", "NC1CCCCC1", "ClC1CCCCC1"],
    "thiophene": ["Cc1ccsc1", "Oc1ccsc1", "Nc1ccsc1", "Clc1ccsc1"],
    "cyclopentane": ["CC1CCCC1", "OC1CCCC1", "NC1CCCC1", "ClC1CCCC1"],
}
# One new molecule per scaffold (file lines 2..6), an acyclic one (line 7), an invalid SMILES (line 8).
POOL = [("CCc1ccccc1", "benzene"), ("CCc1ccncc1", "pyridine"), ("CCC1CCCCC1", "cyclohexane"),
        ("CCc1ccsc1", "thiophene"), ("CCC1CCCC1", "cyclopentane"), ("CCCCO", None), ("C1CC(", None)]


@pytest.mark.parametrize("split", ["scaffold", "random"])
def test_pool_molecules_with_a_valid_or_test_scaffold_leave_the_pool_and_are_counted(tmp_path, split):
    family_of = {s: f for f, members in FAMILIES.items() for s in members}
    rows = [(s, float(i)) for i, s in enumerate(family_of)]
    pd.DataFrame(rows, columns=["smiles", "target"]).to_csv(tmp_path / "data.csv", index=False)
    pd.DataFrame([(s, 1.0) for s, _ in POOL], columns=["smiles", "target"]).to_csv(tmp_path / "pool.csv", index=False)
    spec = parse_study({
        "name": "leak", "task": "property", "model": {"name": "tiny-bert"}, "search_space": "property",
        "dataset": {"name": "csv", "path": str(tmp_path / "data.csv"), "split": split, "seed": 3,
                    "fractions": {"valid": 0.2, "test": 0.2}, "max_bad_fraction": 0.2},
        "pool": {"path": str(tmp_path / "pool.csv")}, "baselines": {"random_forest": False},
    })
    prep = prepare_property(spec)
    data, report = prep.payload, prep.reports[-1]
    assert report.issues["invalid SMILES"]["rows"] == [8]
    if split == "random":  # only exact copies of valid/test molecules leave a randomly split study's pool
        assert "scaffold in valid or test" not in report.issues and len(data.pool) == 6
        return
    held = {family_of[s] for s in data.valid.smiles + data.test.smiles}
    assert len(held) == 2  # one scaffold each
    leaked = [line for line, (_, family) in enumerate(POOL, start=2) if family in held]
    issue = report.issues["scaffold in valid or test"]
    assert issue["count"] == 2 and issue["rows"] == leaked
    assert all("(scaffold " in e for e in issue["examples"])
    kept = sorted(s for s, family in POOL[:-1] if family not in held)
    assert sorted(data.pool.smiles) == kept and len(kept) == 4  # three train scaffolds and the acyclic one
    assert prep.summary["n_pool"] == 4 and report.n_excluded == 3
    pool_scaffolds = {murcko_scaffold(s) for s in data.pool.smiles}
    assert not pool_scaffolds & {murcko_scaffold(s) for s in data.valid.smiles + data.test.smiles}
