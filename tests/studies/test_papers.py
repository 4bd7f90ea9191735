"""Paper studies (studies/papers/): every study and smoke variant validates; the retro smoke variants run
on Ray Tune (each grid row exactly once) and `chemtune compare` lays their results out as the paper's table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from studies.compare import PUBLISHED, compare, load_papers
from studies.runner import launch
from studies.spec import load_study, parse_study
from tests.conftest import ROOT
from trainables.errors import StudyError

PAPERS = ROOT / "studies" / "papers"
STUDIES = sorted(p for p in PAPERS.glob("*.yaml") if p.name != PUBLISHED.name)


def test_one_study_and_one_smoke_variant_per_paper_table():
    papers = load_papers()
    names = {p.stem for p in STUDIES}
    assert {f"{t}_smoke" for t in papers} | set(papers) == names
    for table, paper in papers.items():
        spec = yaml.safe_load((PAPERS / f"{table}.yaml").read_text())
        smoke = yaml.safe_load((PAPERS / f"{table}_smoke.yaml").read_text())
        assert smoke.get("grid") == spec.get("grid") and smoke.get("sampler") == spec.get("sampler")
        keys = [str(r["key"]) for r in paper["rows"]]
        if spec.get("sampler") == "grid":  # the grid is the paper's table, row for row
            assert [str(v) for v in spec["grid"][paper["key"]]] == keys


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_paper_studies_validate(paper_data_dir, path):
    spec = load_study(path)
    if spec.task == "retro" and not path.stem.endswith("smoke"):  # pretrained by their pretraining stage
        assert spec.model.path is None and spec.model.name == "chemformer-small"
        assert spec.model.pretrain == str((PAPERS.parent / "pretrain_chemformer_small.yaml").resolve())


@pytest.mark.parametrize("table", ["retro_table2", "retro_table3", "retro_gamma"])
def test_full_size_retro_studies_validate_on_a_fresh_checkout(tmp_path, monkeypatch, table):
    """No Chemformer checkpoint anywhere: the stage's checkpoint counts as pretrained (fix_*/LoRA rows allowed)."""
    from trainables.retro.models import is_random_init

    monkeypatch.setenv("CHEMTUNE_DATA_DIR", str(tmp_path))
    (tmp_path / "uspto50k").mkdir()
    (tmp_path / "uspto50k" / "teacher_llasmol_train.csv").write_text("product,prediction\n")
    spec = load_study(PAPERS / f"{table}.yaml")
    assert not is_random_init(spec.model) and not spec.options.get("allow_random_init")
    # the converter stays: a study naming Chemformer's own checkpoint needs the file
    data = yaml.safe_load((PAPERS / f"{table}.yaml").read_text())
    data["model"] = {"name": "chemformer-small", "path": "$CHEMTUNE_DATA_DIR/chemformer/chemformer_small.ckpt"}
    with pytest.raises(StudyError, match="chemformer_small.ckpt'?: no such file or directory"):
        parse_study(data)


@pytest.mark.slow
@pytest.mark.parametrize("table", ["retro_table2", "retro_gamma"])
def test_retro_smoke_variant_runs_each_row_once_and_compares(paper_data_dir, tmp_path, table):
    spec = load_study(PAPERS / f"{table}_smoke.yaml")
    try:
        result = launch(spec, root=tmp_path / "store")
    finally:
        ray.shutdown()
    paper = load_papers()[table]
    client = MlflowClient(result.tracking_uri)
    children = [r for r in client.search_runs([result.experiment_id])
                if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id]
    assert result.num_errors == 0 and {r.info.status for r in children} == {"FINISHED"}
    rows = sorted(str(r.data.params[paper["key"]]) for r in children)
    assert rows == sorted(str(r["key"]) for r in paper["rows"])  # each row exactly once
    if table == "retro_gamma":
        for run in children:
            m = run.data.metrics
            assert m["gamma_effective"] == pytest.approx(round(float(run.data.params["gamma"]) * 16) / 16)
            assert m["teacher_train_top1"] == pytest.approx(0.5)
    frame, text = compare(spec.name, table, result.tracking_uri)
    assert list(frame["row"]) == [r["label"] for r in paper["rows"]]
    assert frame["trials"].tolist() == [1] * len(paper["rows"])
    assert frame["test_top1 chemtune"].notna().all() and frame["test_top1 paper"].isna().all()
    assert text.startswith(f"# {paper['title']}") and "| row |" in text
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "compare")}
    assert {f"compare/{table}.csv", f"compare/{table}.md"} <= artifacts
