"""Teacher-label mixing: gamma is the share of ALL train labels replaced; invalid outputs never used; a teacher
chemtune trains itself gets a seeded, product-disjoint share of the train split and labels the other share."""

import pandas as pd
import pytest

from trainables.errors import DataError
from trainables.retro.data import Reactions, canonical_set
from trainables.retro.teacher import mix_labels, split_for_teacher, teacher_from_csv, teacher_from_model, teacher_top1

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


def test_gamma_shortfall_replaces_every_usable_label_within_its_tolerance_and_no_further(teacher):
    """gamma 1 needs 5 labels, the teacher has 3 usable: a shortfall of 2 rows of 5 (0.4) is allowed, 1 (0.2) not."""
    mixed = mix_labels(LABELS, teacher, 1.0, 0, shortfall=0.4)
    assert mixed.replaced.tolist() == [0, 1, 4] and len(mixed.replaced) / len(LABELS) == pytest.approx(0.6)
    with pytest.raises(ValueError, match=r"only 3 .*options.gamma_shortfall 0.2 allows 1 short"):
        mix_labels(LABELS, teacher, 1.0, 0, shortfall=0.2)


def _train(n_products: int, repeats: int = 0) -> Reactions:
    """``n_products`` products, the first ``repeats`` of them listed a second time with other reactants."""
    products = [f"P{i}" for i in range(n_products)] + [f"P{i}" for i in range(repeats)]
    return Reactions(products, [f"R{i}" for i in range(len(products))], list(range(1, len(products) + 1)))


def test_teacher_split_is_disjoint_by_product_seeded_and_counted():
    train = _train(40, repeats=10)  # 50 reactions, 10 products listed twice
    halves = split_for_teacher(train, 0.5, seed=3)
    assert set(halves.teacher.products).isdisjoint(halves.student.products)  # the teacher never saw a student product
    assert sorted(halves.teacher.rows + halves.student.rows) == train.rows  # every reaction on exactly one side
    counts = halves.counts()
    assert counts["teacher_share_products"] == counts["student_share_products"] == 20
    assert counts["teacher_share_rows"] + counts["student_share_rows"] == 50
    assert counts["teacher_share_rows"] == len(halves.teacher) and counts["student_share_rows"] == len(halves.student)
    for i, product in enumerate(train.products):  # a product listed twice keeps its reactants and lands on one side
        side = halves.teacher if product in halves.teacher.products else halves.student
        assert train.reactants[i] in side.reactants
    again = split_for_teacher(train, 0.5, seed=3)
    assert again.teacher.rows == halves.teacher.rows and again.student.rows == halves.student.rows
    backwards = train.subset(reversed(range(len(train))))  # the order of the rows does not move the split
    assert set(split_for_teacher(backwards, 0.5, seed=3).teacher.products) == set(halves.teacher.products)
    others = {frozenset(split_for_teacher(train, 0.5, seed=s).teacher.products) for s in range(5)}
    assert len(others) > 1  # the seed decides
    assert split_for_teacher(train, 0.25, seed=3).counts()["teacher_share_products"] == 10


def test_teacher_split_refuses_a_share_that_leaves_a_side_empty():
    with pytest.raises(DataError, match="teacher_share 0.01 of 40 distinct train products leaves the teacher no reaction"):
        split_for_teacher(_train(40), 0.01, seed=0)
    with pytest.raises(DataError, match="leaves the student no reaction"):
        split_for_teacher(_train(40), 0.99, seed=0)


def test_a_saved_teacher_folder_labels_with_its_first_valid_candidate(tmp_path, monkeypatch, tiny):
    """The teacher stage's cached folder is run without MLflow: greedy top-1 with beams 1; with beams k, the
    first valid candidate of the k (an invalid top-1 falls back to the next); none valid: counted as invalid."""
    from trainables.retro.predictor import RetroPredictor, save_retro_model

    model, tokenizer = tiny
    folder = tmp_path / "teacher"
    save_retro_model(folder, model, tokenizer, None, num_beams=4)
    monkeypatch.setattr("trainables.retro.teacher.cache_dir", lambda: tmp_path / "cache")
    greedy = teacher_from_model(str(folder), PRODUCTS[:3], [7, 8, 9])  # the real tiny model, untrained
    assert len(greedy.predictions) == 3 and greedy.report.n_rows == 3
    assert len(greedy.eligible) + greedy.report.n_excluded == 3
    beams = {PRODUCTS[0]: ["C1CC", "OC(C)=O.CCO"], PRODUCTS[1]: ["c1ccccc1Br.Cl", "CC"], PRODUCTS[2]: ["((", "C1C"]}
    asked = []

    def predict(self, products, num_beams=None, top_k=10, batch_size=64):  # noqa: ANN001, ANN202
        asked.append((num_beams, top_k))
        return pd.DataFrame({"product": products, **{f"prediction_{k + 1}": [beams[p][k] for p in products]
                                                      for k in range(2)}})

    monkeypatch.setattr(RetroPredictor, "predict", predict)
    labels = teacher_from_model(str(folder), PRODUCTS[:3], [7, 8, 9], beams=2)
    assert asked == [(2, 2)]
    assert labels.predictions == ["CC(=O)O.CCO", "Brc1ccccc1.Cl", None]
    assert labels.report.issues["invalid teacher prediction"]["rows"] == [9]
    assert teacher_from_model(str(folder), PRODUCTS[:3], [7, 8, 9], beams=2).predictions == labels.predictions
    assert asked == [(2, 2)]  # cached per (folder, beams, products): not run again


def test_a_model_teacher_short_of_valid_labels_is_refused_saying_what_to_change(shared_data, tmp_path, monkeypatch,
                                                                                tiny):
    """chemtune's own teacher covers every row but its invalid predictions: the refusal names them and the knobs."""
    from studies.spec import parse_study
    from trainables.retro.predictor import RetroPredictor, save_retro_model
    from trainables.retro.task import prepare_retro

    lines = (shared_data / "uspto50k" / "train.smi").read_text().splitlines()[:12]
    for split, rows in (("train", lines[:8]), ("valid", lines[8:10]), ("test", lines[10:12])):
        (tmp_path / f"{split}.smi").write_text("\n".join(rows) + "\n")
    folder = tmp_path / "teacher"
    save_retro_model(folder, *tiny, None, num_beams=4)
    monkeypatch.setattr("trainables.retro.teacher.cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(RetroPredictor, "predict", lambda self, products, num_beams=None, top_k=10, batch_size=64:
                        pd.DataFrame({"product": products, "prediction_1": ["CCO" if i % 2 else "((" for i, _ in
                                                                            enumerate(products)]}))
    study = {"name": "g", "task": "retro", "dataset": {"name": "uspto50k", "path": str(tmp_path)},
             "model": {"name": "tiny-bart"}, "search_space": "retro", "sampler": "grid",
             "grid": {"gamma": [0.0, 1.0]}, "num_trials": 2, "metric": "valid_top1",
             "fixed": {"treatment": "full", "lr": 1e-3, "label_smoothing": 0.0, "augment_prob": 0.0, "batch_size": 16}}
    with pytest.raises(DataError, match=rf"teacher {folder}: gamma 1 replaces 8 of the 8 train labels.*only 4 .*"
                                        r"\(4 of its predictions are invalid SMILES, 0 missing\); raise "
                                        r"options.teacher_beams .*or allow options.gamma_shortfall"):
        prepare_retro(parse_study({**study, "options": {"teacher_uri": str(folder)}}))
    ok = prepare_retro(parse_study({**study, "options": {"teacher_uri": str(folder), "gamma_shortfall": 0.5}}))
    assert ok.summary["teacher_eligible"] == 4 and ok.summary["teacher_unusable"] == 4
