"""The gamma studies' offline teacher stage (``options.teacher_study``, studies/teaching.py): a retro study trained on a
seeded, product-disjoint share of the student's train split, cached by content hash; bad stage files refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from studies.cli import main as cli
from studies.spec import load_study, parse_study
from studies.teaching import plan_teacher, teacher_stage_spec, with_teacher
from tests.conftest import ROOT, TINY_STUDIES
from trainables.errors import StudyError

SMOKE_TEACHER = ROOT / "studies" / "teacher_tiny_bart_smoke.yaml"
SMOKE_DATASET = yaml.safe_load(SMOKE_TEACHER.read_text())["dataset"]


def _student(**options: object) -> dict:
    """A tiny gamma study reading the smoke teacher stage (same dataset section as the stage file)."""
    return {**TINY_STUDIES["retro"], "name": "student", "dataset": dict(SMOKE_DATASET),
            "sampler": "grid", "grid": {"gamma": [0.0, 0.5]}, "num_trials": 2,
            "fixed": {"treatment": "full", "batch_size": 16, "lr": 1e-3, "label_smoothing": 0.0, "augment_prob": 0.0},
            "options": {**TINY_STUDIES["retro"]["options"], "teacher_study": str(SMOKE_TEACHER), **options}}


@pytest.fixture
def teacher_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setattr("studies.teaching.cache_dir", lambda: folder)
    return folder


def test_teacher_csv_and_a_teacher_stage_together_are_refused_naming_both_keys(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("product,prediction\nCCO,CC.O\n")
    with pytest.raises(StudyError, match=r"give one teacher, not options.teacher_csv and options.teacher_study"):
        parse_study(_student(teacher_csv=str(csv)))
    with pytest.raises(StudyError, match=r"options.teacher_study '/nowhere/t.yaml': no such study file"):
        parse_study(_student(teacher_study="/nowhere/t.yaml"))


def test_a_teacher_stage_that_is_not_a_retro_study_is_refused_by_validate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(_student(teacher_study=str(ROOT / "studies" / "pretrain_tiny_bart_smoke.yaml"))))
    assert cli(["validate", str(path), "--root", str(tmp_path / "store")]) == 2
    out = capsys.readouterr().out.replace("\n", "")
    assert "options.teacher_study:" in out and "is a 'pretrain' study, not a retro study" in out


@pytest.mark.parametrize(("change", "message"), [
    ({"dataset": {"name": "uspto50k", "limit": 200, "split": "random"}},
     r"reads dataset \{'name': 'uspto50k', 'split': 'random', 'limit': 200\} but this study reads .*same dataset"),
    ({"options": {"teacher_uri": "models:/other/1"}, "fixed": {**yaml.safe_load(SMOKE_TEACHER.read_text())["fixed"], "gamma": 0.5}},
     r"sets options.teacher_uri; a teacher stage trains on the true labels of its share alone"),
])
def test_a_teacher_stage_on_other_data_or_with_a_teacher_of_its_own_is_refused(tmp_path: Path, change: dict,
                                                                               message: str) -> None:
    stage = {**yaml.safe_load(SMOKE_TEACHER.read_text()), **change}
    path = tmp_path / "teacher.yaml"
    path.write_text(yaml.safe_dump(stage))
    with pytest.raises(StudyError, match=message):
        teacher_stage_spec(parse_study(_student(teacher_study=str(path))))


def test_the_stage_trains_on_the_teachers_share_and_the_student_reads_it_as_its_teacher(teacher_cache: Path) -> None:
    study = parse_study(_student(teacher_share=0.4))
    stage = plan_teacher(study)
    assert stage is not None and not stage.cached and stage.folder.parent == teacher_cache / "teachers"
    assert stage.spec.options["train_part"] == {"side": "teacher", "share": 0.4}
    assert stage.spec.name == f"teacher-tiny-bart-smoke-{stage.key[:8]}"
    counts = stage.prepared.summary
    assert counts["n_train"] == counts["teacher_share_rows"] and counts["teacher_share_products"] == round(0.4 * 300)
    student = with_teacher(study, stage)
    assert student.options["teacher_uri"] == str(stage.folder) and "teacher_study" not in student.options
    assert student.options["train_part"] == {"side": "student", "share": 0.4}
    from trainables.retro.task import parse_options

    assert parse_options(student.options).part.side == "student"
    # the key: the same configuration, the same key; another share, another checkpoint
    assert plan_teacher(study).key == stage.key
    assert plan_teacher(parse_study(_student(teacher_share=0.5))).key != stage.key


def test_validate_says_the_teacher_is_not_built_and_launch_trains_it_first(
        tmp_path: Path, teacher_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(_student()))
    assert cli(["validate", str(path), "--root", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out.replace("\n", "")
    assert "teacher stage" in out and "checkpoint not cached" in out and "`chemtune launch` trains it first" in out
    assert "gamma coverage is checked once the teacher has predicted" in out
    assert "teacher_share_rows=150, student_share_rows=150" in out and "n_train=150" in out
    assert not teacher_cache.exists()  # validate builds nothing


def test_every_gamma_paper_study_names_the_offline_teacher_stage() -> None:
    for name in ("retro_gamma", "retro_gamma_as_published", "retro_gamma_smoke"):
        spec = load_study(ROOT / "studies" / "papers" / f"{name}.yaml")
        assert "teacher_csv" not in spec.options  # the LLM's file is not there offline
        stage = teacher_stage_spec(spec)
        assert stage is not None and stage.task == "retro" and stage.dataset == spec.dataset
