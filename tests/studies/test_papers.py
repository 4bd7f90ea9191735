"""Paper studies (studies/papers/): every study and smoke variant validates; the retro smoke variants run
on Ray Tune (each grid row exactly once) and `chemtune compare` lays their results out as the paper's table."""

from __future__ import annotations

import pandas as pd
import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from studies.cli import main as cli
from studies.compare import PUBLISHED, compare, compare_table, load_papers
from studies.runner import launch
from studies.spec import load_study, parse_study
from tests.conftest import ROOT
from trainables.errors import StudyError

PAPERS = ROOT / "studies" / "papers"
STUDIES = sorted(p for p in PAPERS.glob("*.yaml") if p.name != PUBLISHED.name)


def test_one_study_an_as_published_and_a_smoke_variant_per_paper_table():
    papers = load_papers()
    names = {p.stem for p in STUDIES}
    assert {f"{t}_smoke" for t in papers} | {f"{t}_as_published" for t in papers} | set(papers) == names
    for table, paper in papers.items():
        spec = yaml.safe_load((PAPERS / f"{table}.yaml").read_text())
        smoke = yaml.safe_load((PAPERS / f"{table}_smoke.yaml").read_text())
        assert smoke.get("grid") == spec.get("grid") and smoke.get("sampler") == spec.get("sampler")
        keys = [str(r["key"]) for r in paper["rows"]]
        if spec.get("sampler") == "grid":  # the grid is the paper's table, row for row
            assert [str(v) for v in spec["grid"][paper["key"]]] == keys


REPORT_FIGURES = ROOT.parent / "shared" / "papers" / "published.yaml"


@pytest.mark.parametrize("table", sorted(load_papers()))
def test_every_table_carries_the_reports_figures(table):
    """Each table cites its report and has figures in at least one row (the column was all null once)."""
    paper = load_papers()[table]
    assert paper["source"].split(",")[0] in {"000_ae9ae4638842ec0e.txt", "004_29137dbc71a98e4c.txt"}
    filled = [r for r in paper["rows"] if any(v is not None for v in r["published"].values())]
    assert filled, f"{table}: no published figure"
    assert all(r.get("in_report", True) for r in filled)
    if table.startswith("retro"):  # the retro report gives every cell of its three tables
        assert all(v is not None for r in paper["rows"] for v in r["published"].values())
    else:
        assert paper["metrics"] == ["test_r2", "test_mse"]  # the property report's own metrics, never RMSE


@pytest.mark.skipif(not REPORT_FIGURES.exists(), reason="needs ../shared/papers beside the checkout")
def test_published_figures_match_the_transcription_beside_the_reports():
    """Every figure in the project's table equals the one transcribed from the report files."""
    src = yaml.safe_load(REPORT_FIGURES.read_text())
    ours = load_papers()
    for table, name in [("retro_gamma", "table1_gamma"), ("retro_table2", "table2_treatments"),
                        ("retro_table3", "table3_lora")]:
        cols = src["retro"][name]["columns"]
        theirs = [dict(zip(cols[1:], r[1:])) for r in src["retro"][name]["rows"]]
        mine = [r["published"] for r in ours[table]["rows"]]
        if table == "retro_gamma":  # the report lists gamma from 1.0 down; chemtune's grid goes up
            theirs = theirs[::-1]
        assert mine == [{m: row[m] for m in ours[table]["metrics"]} for row in theirs], table
    prop = {r["row"]: r for r in src["property"]["rows"]}
    peft = {r["key"]: r["published"] for r in ours["property_peft"]["rows"]}
    for key, row in [("bitfit", "BitFit"), ("lora", "LoRA"), ("ia3", "(IA)3"), ("full", "base fine-tune (full)")]:
        assert peft[key] == {"test_r2": prop[row]["test_r2"], "test_mse": prop[row]["test_mse"]}
    curriculum = {r["key"]: r["published"] for r in ours["property_curriculum"]["rows"]}["curriculum"]
    assert curriculum == {"test_r2": 0.746, "test_mse": 0.3752}


def test_compare_table_puts_published_as_published_tuned_and_difference_side_by_side():
    paper = load_papers()["property_peft"]
    mine = pd.DataFrame({"method": ["bitfit", "bitfit", "lora"], "valid_rmse": [0.9, 0.8, 0.7],
                         "test_r2": [0.10, 0.20, 0.30], "test_mse": [1.3, 1.2, 1.1]})
    tuned = pd.DataFrame({"method": ["bitfit"], "valid_rmse": [0.6], "test_r2": [0.5], "test_mse": [0.8]})
    table = compare_table(mine, paper, "min", (tuned, "min")).set_index("method")
    assert table.loc["bitfit", "trials"] == 2 and table.loc["bitfit", "valid_rmse"] == 0.8  # best on valid
    assert table.loc["bitfit", "test_r2 paper"] == 0.1334
    assert table.loc["bitfit", "test_r2 as published"] == 0.20
    assert table.loc["bitfit", "test_r2 tuned"] == 0.5
    assert table.loc["bitfit", "test_r2 diff"] == pytest.approx(0.20 - 0.1334)
    assert pd.isna(table.loc["full", "test_r2 as published"]) and pd.isna(table.loc["full", "test_r2 diff"])
    assert pd.isna(table.loc["lora", "test_r2 tuned"])


@pytest.mark.parametrize("table", sorted(load_papers()))
def test_as_published_variant_follows_the_reports_settings_line_by_line(table, paper_data_dir):
    """Nothing searched, each row once, and every setting the report states (published.yaml) fixed to it."""
    paper = load_papers()[table]
    stated = paper["settings"]
    spec = load_study(PAPERS / f"{table}_as_published.yaml")
    assert spec.sampler == "grid" and spec.num_trials == len(paper["rows"]) and not spec.ranges and not spec.enqueue
    assert [str(v) for v in spec.grid[paper["key"]]] == [str(r["key"]) for r in paper["rows"]]
    assert spec.max_epochs == stated["epochs"] and spec.scheduler.grace_period == stated["epochs"]  # no early stop
    assert spec.fixed["lr"] == stated["lr"] and spec.fixed["schedule"] == stated["schedule"]
    if spec.task == "property":
        assert spec.fixed["optimizer"] == stated["optimizer"].lower()
        for knob, setting in [("top_k", "top_k"), ("influence_train_on", "train_on"), ("curriculum_bins", "bins"),
                              ("curriculum_difficulty", "difficulty"), ("curriculum_pacing", "pacing")]:
            if setting in stated:
                assert spec.fixed[knob] == stated[setting], knob
        if "uncertainty" in stated:
            assert spec.fixed["selection"] == "active" and spec.grid["acquisition"][0] == "uncertainty"
    else:
        from trainables.retro.models import SEQ2SEQ
        from trainables.retro.treatments import _OUT_PROJ

        assert spec.fixed["batch_size"] == stated["batch_size"] and spec.model.name == "chemformer-small"
        scratch = spec.model.model_copy(update={"path": None, "pretrain": None, "max_length": 64})  # the architecture, unpretrained
        model, _ = SEQ2SEQ.get("chemformer-small").load(scratch, ["CCO", "c1ccccc1"], 0)
        cfg = model.config
        assert (cfg.encoder_layers, cfg.decoder_layers, cfg.d_model, cfg.encoder_ffn_dim) == (6, 6, 512, 2048)
        assert cfg.dropout == stated["dropout"]
        if "lora_targets" in stated:  # LoRA adapts the attention output projections and nothing else
            assert _OUT_PROJ.search("model.encoder.layers.0.self_attn.out_proj")
            assert not _OUT_PROJ.search("model.encoder.layers.0.self_attn.q_proj")


@pytest.mark.skipif(not REPORT_FIGURES.exists(), reason="needs ../shared/papers beside the checkout")
def test_stated_settings_match_the_transcription_beside_the_reports():
    src = yaml.safe_load(REPORT_FIGURES.read_text())
    ours = load_papers()
    retro = src["retro"]["settings"]
    for table, batch in [("retro_gamma", "table1"), ("retro_table2", "table2"), ("retro_table3", "table3")]:
        mine = ours[table]["settings"]
        assert (mine["lr"], mine["schedule"], mine["epochs"]) == (retro["lr"], retro["schedule"], retro["epochs"])
        assert mine["batch_size"] == retro["batch_size"][batch]
        assert mine["dropout"] == retro["architecture"]["dropout"]
    prop = src["property"]["settings"]
    for table in ("property_peft", "property_influence", "property_curriculum", "property_active"):
        mine = ours[table]["settings"]
        assert (mine["optimizer"], mine["lr"], mine["epochs"]) == (prop["optimizer"], prop["lr"], prop["epochs"])
    assert ours["property_curriculum"]["settings"]["bins"] == src["property"]["curriculum"]["bins"]


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
    (tmp_path / "uspto50k").mkdir()  # no teacher file either: the gamma study's teacher is its own stage
    spec = load_study(PAPERS / f"{table}.yaml")
    assert not is_random_init(spec.model) and not spec.options.get("allow_random_init")
    # the converter stays: a study naming Chemformer's own checkpoint needs the file
    data = yaml.safe_load((PAPERS / f"{table}.yaml").read_text())
    data["model"] = {"name": "chemformer-small", "path": "$CHEMTUNE_DATA_DIR/chemformer/chemformer_small.ckpt"}
    with pytest.raises(StudyError, match="chemformer_small.ckpt'?: no such file or directory"):
        parse_study(data)


@pytest.fixture(scope="module")
def empty_cache(tmp_path_factory):
    """One chemtune cache for the module: no checkpoint, no teacher (canonical SMILES fill it once)."""
    return tmp_path_factory.mktemp("fresh-cache")


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_paper_study_validates_on_a_fresh_checkout(path, empty_cache, shared_data, tmp_path, monkeypatch,
                                                         capsys):
    """`chemtune validate` with ../shared/data and nothing cached: no teacher file, no checkpoint; it says which
    stage (pretraining, teacher) `launch` runs first, and builds none."""
    monkeypatch.setenv("CHEMTUNE_DATA_DIR", str(shared_data))
    monkeypatch.setenv("CHEMTUNE_CACHE", str(empty_cache))
    code = cli(["validate", str(path), "--root", str(tmp_path / "store")])
    out = capsys.readouterr().out.replace("\n", "")
    assert code == 0, out
    spec = load_study(path)
    if spec.model.pretrain:
        assert "pretraining stage" in out and "checkpoint not cached" in out
    if spec.options.get("teacher_study"):
        assert "teacher stage" in out and "`chemtune launch` trains it first" in out
    assert not (empty_cache / "pretrained").exists() and not (empty_cache / "teachers").exists()


def _trial_runs(uri, experiment):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("chemtune.role") == "trial"]


@pytest.mark.slow
@pytest.mark.parametrize("table", ["retro_table2", "retro_gamma"])
def test_retro_smoke_variant_runs_each_row_once_and_compares(paper_data_dir, tmp_path, table, monkeypatch, capsys):
    stages = tmp_path / "cache"  # the teacher stage's checkpoint: not cached yet
    monkeypatch.setattr("studies.teaching.cache_dir", lambda: stages)
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
        _teacher_stage_ran_once_and_labelled(spec, result, children, stages, tmp_path, capsys)
    frame, text = compare(spec.name, table, result.tracking_uri)
    assert list(frame["row"]) == [r["label"] for r in paper["rows"]]
    assert frame["trials"].tolist() == [1] * len(paper["rows"])
    assert frame["test_top1 as published"].notna().all() and frame["test_top1 paper"].notna().all()
    assert frame["test_top1 diff"].tolist() == pytest.approx(
        (frame["test_top1 as published"] - frame["test_top1 paper"]).tolist())
    assert text.startswith(f"# {paper['title']}") and "| row |" in text
    if table == "retro_table2":  # cost beside accuracy: a frozen encoder or decoder trains fewer parameters
        costly, costly_md = compare(spec.name, table, result.tracking_uri, costs=True)
        params = dict(zip(costly["treatment"], costly["trainable_params"]))
        assert params["fix_encoder"] < params["full"] and params["fix_decoder"] < params["full"]
        assert (costly["device_seconds"] > 0).all() and "| trainable_params |" in costly_md
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "compare")}
    assert {f"compare/{table}.csv", f"compare/{table}.md"} <= artifacts


def _teacher_stage_ran_once_and_labelled(spec, result, children, stages, tmp_path, capsys):
    """The smoke gamma study trained its teacher stage first, on the other half of the products; its trials
    replaced round(gamma * rows) labels where the teacher had that many usable ones; a second study reuses it."""
    import json

    from studies.pretraining import STAGE_JSON

    (folder,) = list((stages / "teachers").iterdir())
    stage = json.loads((folder / STAGE_JSON).read_text())
    assert len(_trial_runs(result.tracking_uri, stage["study"])) == 1
    params = MlflowClient(result.tracking_uri).get_run(result.parent_run_id).data.params
    assert params["options.teacher_uri"] == str(folder) and "options.teacher_study" not in params
    n = int(params["n_train"])
    assert n == int(params["student_share_rows"]) and n + int(params["teacher_share_rows"]) == 300
    usable = int(params["teacher_eligible"])
    assert usable + int(params["teacher_unusable"]) == n
    for run in children:
        m = run.data.metrics
        assert m["teacher_eligible"] == usable
        assert m["gamma_effective"] == pytest.approx(min(round(float(run.data.params["gamma"]) * n), usable) / n)
        assert 0.0 <= m["teacher_train_top1"] <= usable / n
    capsys.readouterr()
    assert cli(["validate", str(PAPERS / "retro_gamma_smoke.yaml"), "--root", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out.replace("\n", "")
    assert f"checkpoint cached at {folder}" in out and f"its labels: {usable} usable, {n - usable} unusable" in out
    stamp = (folder / STAGE_JSON).stat().st_mtime_ns
    again = {**yaml.safe_load((PAPERS / "retro_gamma_smoke.yaml").read_text()), "name": "retro-gamma-smoke-again",
             "grid": {"gamma": [0.0, 1.0]}, "num_trials": 2}
    again["options"]["teacher_study"] = str(PAPERS.parent / "teacher_tiny_bart_smoke.yaml")
    try:
        second = launch(parse_study(again), root=tmp_path / "store")
    finally:
        ray.shutdown()
    assert second.num_errors == 0
    assert len(_trial_runs(result.tracking_uri, stage["study"])) == 1  # the teacher was not trained again
    assert (folder / STAGE_JSON).stat().st_mtime_ns == stamp and list((stages / "teachers").iterdir()) == [folder]
