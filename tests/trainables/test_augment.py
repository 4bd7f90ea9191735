"""SMILES enumeration: randomized SMILES are the same molecule, fresh per epoch; TTA in trials and serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studies.spec import parse_study
from tests.conftest import tiny_study
from trainables import TASKS, NullReporter
from trainables.data.chem import canonicalize
from trainables.property.augment import augmented_rows, randomized_smiles, tta_predict
from trainables.property.task import PropertyTrainer

MOLS = ["CC(=O)Oc1ccccc1C(=O)O", "CN1CCC[C@H]1c1cccnc1", "OCC(O)CO"]


def test_randomized_smiles_are_the_same_molecules_and_seeded() -> None:
    a = randomized_smiles(MOLS, 4, seed=1)
    assert [len(v) for v in a] == [4, 4, 4]
    for mol, variants in zip(MOLS, a):
        assert {canonicalize(v) for v in variants} == {canonicalize(mol)}
    assert len(set(a[0])) > 1  # aspirin has many spellings
    assert randomized_smiles(MOLS, 4, seed=1) == a
    assert randomized_smiles(MOLS, 4, seed=2) != a  # a new epoch draws new strings
    extra, labels = augmented_rows(MOLS, np.array([1.0, 2.0, 3.0]), 2, epoch_seed=5)
    assert len(extra) == 6 and labels.tolist() == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="invalid SMILES 'C1CC' \\(row 0\\)"):
        randomized_smiles(["C1CC"], 1, 0)


def test_tta_is_the_mean_over_canonical_and_randomized() -> None:
    def length(smiles: list[str]) -> np.ndarray:  # a "model" that sees the spelling
        return np.array([len(s) + s.count("(") for s in smiles], dtype=float)

    assert tta_predict(length, MOLS, 1).tolist() == length(MOLS).tolist()
    variants = randomized_smiles(MOLS, 3, seed=7)
    expected = [(length([m])[0] + length(v).sum()) / 4 for m, v in zip(MOLS, variants)]
    np.testing.assert_allclose(tta_predict(length, MOLS, 4, seed=7), expected)


def test_trainer_augments_each_epoch_and_serves_with_tta(tmp_path: Path) -> None:
    spec = parse_study(tiny_study(search_space="property_plus", max_epochs=1, dataset={"limit": 80}))
    data = TASKS.get("property").prepare(spec).payload
    trainer = PropertyTrainer({"augment_copies": 2, "tta": 3, "batch_size": 16}, data, spec)
    rows = np.arange(len(data.train))
    first = [tuple(x[0]) for x in trainer.rows_loader(rows, epoch=0).dataset]
    second = [tuple(x[0]) for x in trainer.rows_loader(rows, epoch=1).dataset]
    assert len(first) == 3 * len(rows)
    assert first[: len(rows)] == second[: len(rows)] and first != second  # canonical kept, copies fresh
    reporter = NullReporter(keep_dir=tmp_path / "ckpt")
    final = trainer.fit(reporter)
    canonical_only = trainer.predict_ids(trainer.ids["test"])
    test = pd.read_csv(tmp_path / "ckpt" / "test_predictions.csv")
    assert not np.allclose(test["prediction"], canonical_only)  # TTA changed the scores
    from trainables.property.serving import PropertyPredictor

    served = PropertyPredictor.load(tmp_path / "ckpt" / "model").predict(list(test["smiles"]))
    np.testing.assert_allclose(served["prediction"], test["prediction"], rtol=1e-4, atol=1e-4)
    assert final["test_rmse"] == pytest.approx(float(np.sqrt(np.mean((test["prediction"] - test["target"]) ** 2))))
