"""Teacher-label mixing: gamma 0 / 1 replace none / all eligible labels; invalid outputs never used."""

import numpy as np
import pandas as pd
import pytest

from trainables.retro.data import canonical_set
from trainables.retro.teacher import mix_labels, teacher_from_csv, teacher_top1

PRODUCTS = [canonical_set(s) for s in ("CCOC(C)=O", "c1ccccc1Br", "CC(=O)Nc1ccccc1", "CCN(CC)CC", "OCCO")]
LABELS = ["CC(=O)O.CCO", "Brc1ccccc1.Cl", "CC(=O)Cl.Nc1ccccc1", "CCBr.CCNCC", "OCC=O"]


@pytest.fixture
def teacher(tmp_path):
    path = tmp_path / "teacher.csv"
    pd.DataFrame({
        "product": ["O=C(OCC)C", "Brc1ccccc1", "CC(=O)Nc1ccccc1", "bad((", "OCCO"],  # other spellings match
        "prediction": ["CCO.OC(C)=O", "c1ccccc1.BrBr", "C1CC", "CC", "OCC=O"],  # row 3: invalid prediction
    }).to_csv(path, index=False)
    return teacher_from_csv(path, PRODUCTS, rows=[10, 11, 12, 13, 14])


def test_teacher_csv_alignment_and_report(teacher):
    assert teacher.predictions == ["CC(=O)O.CCO", "BrBr.c1ccccc1", None, None, "O=CCO"]
    assert teacher.eligible.tolist() == [0, 1, 4]
    issues = teacher.report.issues
    assert issues["invalid teacher prediction"]["count"] == 1 and issues["invalid teacher prediction"]["rows"] == [12]
    assert issues["no teacher prediction"]["rows"] == [13]
    assert issues["teacher.csv: invalid product SMILES"]["rows"] == [5]  # CSV line of 'bad(('


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gamma_zero_and_one(teacher, seed):
    none = mix_labels(LABELS, teacher, 0.0, seed)
    assert none.labels == LABELS and len(none.replaced) == 0 and none.n_eligible == 3
    every = mix_labels(LABELS, teacher, 1.0, seed)
    assert every.replaced.tolist() == [0, 1, 4]
    assert [every.labels[i] for i in (0, 1, 4)] == [teacher.predictions[i] for i in (0, 1, 4)]
    assert [every.labels[i] for i in (2, 3)] == [LABELS[2], LABELS[3]]  # invalid / missing teacher: untouched


def test_partial_gamma_is_seeded(teacher):
    a, b = mix_labels(LABELS, teacher, 0.4, 7), mix_labels(LABELS, teacher, 0.4, 7)
    assert len(a.replaced) == 1 and a.replaced.tolist() == b.replaced.tolist()
    assert set(a.replaced.tolist()) <= {0, 1, 4}
    seen = {tuple(mix_labels(LABELS, teacher, 0.4, s).replaced.tolist()) for s in range(20)}
    assert len(seen) > 1  # the seed decides which rows


def test_gamma_without_teacher():
    assert mix_labels(LABELS, None, 0.0, 0).labels == LABELS
    with pytest.raises(ValueError, match="needs a teacher"):
        mix_labels(LABELS, None, 0.5, 0)


def test_teacher_top1_counts_all_rows(teacher):
    # rows 0 and 4 agree with the gold label (other spellings), row 1 is wrong, rows 2-3 unusable: 2 of 5
    assert teacher_top1(LABELS, teacher) == pytest.approx(2 / 5)
    assert teacher_top1(LABELS[:1] * 5, teacher) == pytest.approx(1 / 5)
