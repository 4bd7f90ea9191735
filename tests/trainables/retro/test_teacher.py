"""Teacher-label mixing: gamma is the share of ALL train labels replaced; invalid outputs never used."""

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
    every = mix_labels(LABELS, teacher, 0.6, seed)  # 3 of 5 rows: every usable one
    assert every.replaced.tolist() == [0, 1, 4]
    assert [every.labels[i] for i in (0, 1, 4)] == [teacher.predictions[i] for i in (0, 1, 4)]
    assert [every.labels[i] for i in (2, 3)] == [LABELS[2], LABELS[3]]  # invalid / missing teacher: untouched


def test_gamma_beyond_the_teachers_coverage_is_refused_with_the_numbers(teacher):
    with pytest.raises(ValueError, match=r"gamma 1 replaces 5 of the 5 train labels.*only 3 .*at most gamma 0\.6000"):
        mix_labels(LABELS, teacher, 1.0, 0)


def test_partial_gamma_is_seeded(teacher):
    a, b = mix_labels(LABELS, teacher, 0.4, 7), mix_labels(LABELS, teacher, 0.4, 7)
    assert len(a.replaced) == 2 and a.replaced.tolist() == b.replaced.tolist()  # 0.4 of all 5 rows
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


def test_a_study_whose_gamma_outruns_the_teacher_fails_before_any_trial(shared_data, tmp_path):
    from studies.spec import parse_study
    from trainables.errors import DataError
    from trainables.retro.task import prepare_retro

    lines = (shared_data / "uspto50k" / "train.smi").read_text().splitlines()[:12]
    for split, rows in (("train", lines[:8]), ("valid", lines[8:10]), ("test", lines[10:12])):
        (tmp_path / f"{split}.smi").write_text("\n".join(rows) + "\n")
    pairs = [ln.split(" >> ") for ln in lines[:2]]  # the teacher knows 2 of the 8 train products
    pd.DataFrame({"product": [p for p, _ in pairs], "prediction": [r for _, r in pairs]}).to_csv(
        tmp_path / "teacher.csv", index=False)
    study = {"name": "g", "task": "retro", "dataset": {"name": "uspto50k", "path": str(tmp_path)},
             "model": {"name": "tiny-bart"}, "search_space": "retro", "sampler": "grid",
             "options": {"teacher_csv": str(tmp_path / "teacher.csv")}, "metric": "valid_top1",
             "fixed": {"treatment": "full", "lr": 1e-3, "label_smoothing": 0.0, "augment_prob": 0.0, "batch_size": 16}}
    ok = prepare_retro(parse_study({**study, "grid": {"gamma": [0.0, 0.25]}, "num_trials": 2}))
    assert ok.summary["teacher_eligible"] == 2
    with pytest.raises(DataError, match=r"teacher.csv: gamma 0.5 replaces 4 of the 8 train labels.*only 2"):
        prepare_retro(parse_study({**study, "grid": {"gamma": [0.0, 0.5]}, "num_trials": 2}))
