"""What a user sees of a study: MLflow runs and the study run, Optuna's states, the leaderboard,
the HTML report and the MLflow UI in a real (headless) browser, the registry, predict, the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pandas as pd
import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from studies.cli import build_parser, main as cli
from studies.progress import ProgressCallback
from studies.results import format_value, leaderboard
from studies.runner import launch
from studies.spec import load_study
from studies.store import StudyPaths
from studies.trials import stopped_early, trial_name
from tests.conftest import ROOT, tiny_study

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


# -- small pieces, no Ray ---------------------------------------------------------------------------
def test_trial_names_are_readable() -> None:
    assert trial_name(3, {"method": "lora", "lora_r": 16, "lr": 0.001, "batch_size": 32}) == "t03 lora r16 lr=1e-3"
    assert trial_name(12, {"method": "full", "lora_r": 16, "lr": 3e-5}) == "t12 full lr=3e-5"
    assert trial_name(0, {"treatment": "lora_both+adapter_all", "lora_rank": 8, "gamma": 0.3, "lr": 0.0005}) == (
        "t00 lora_both+adapter_all r8 lr=5e-4 gamma=0.3")


def test_stopped_early_tells_asha_from_a_finished_or_patient_trial() -> None:
    assert stopped_early({"training_iteration": 1, "valid_rmse": 1.0}, 3)
    assert not stopped_early({"training_iteration": 3, "valid_rmse": 1.0}, 3)
    assert not stopped_early({"training_iteration": 2, "valid_rmse": 1.0, "test_rmse": 1.1}, 3)  # patience


def test_numbers_print_as_people_read_them() -> None:
    assert format_value(18940.0) == "18,940" and format_value(90753) == "90,753"
    assert format_value(0.123456) == "0.1235" and format_value(float("nan")) == "" and format_value(None) == ""
    # a count column with a missing value is float in the frame: 40.0 epochs still reads 40
    assert format_value(40.0, count=True) == "40" and format_value(40.0) == "40.0000"


def test_progress_counts_best_and_eta() -> None:
    class Trial:
        def __init__(self, tid: str, result: dict) -> None:
            self.trial_id, self.config, self.last_result = tid, {"method": "full", "lr": 1e-3}, result

    view = ProgressCallback("valid_rmse", "min", total=3, max_epochs=2, live=False)
    # Trial ids no study of this process used: the Tune -> Optuna trial map is process-wide, and an id an
    # earlier test's study registered would name the trial by that study's Optuna number.
    a = Trial(f"views-a-{uuid.uuid4().hex}", {})
    view.on_trial_start(0, [], a)
    view.on_trial_result(0, [], a, {"epoch": 1, "valid_rmse": 0.9, "time_this_iter_s": 10.0})
    from rich.console import Console

    screen = Console(record=True, width=120)
    screen.print(view.table())  # the live view: each running trial's epoch and metric
    assert re.search(r"t\? full lr=1e-3\s*│\s*1/2\s*│\s*0.9000", screen.export_text())
    # 2 unstarted trials x 2 epochs + 1 left of the running one, at 10 s each, one at a time
    assert view.eta_seconds() == pytest.approx(50.0)
    a.last_result = {"epoch": 2, "training_iteration": 2, "valid_rmse": 0.8, "test_rmse": 0.85}
    view.on_trial_complete(0, [], a)
    b = Trial(f"views-b-{uuid.uuid4().hex}", {"epoch": 1, "training_iteration": 1, "valid_rmse": 0.7})
    view.on_trial_start(0, [], b)
    view.on_trial_complete(0, [], b)  # stopped by ASHA: a better epoch-1 score is not the best
    assert view.counts == {"done": 1, "pruned": 1, "failed": 0} and view.best == 0.8
    assert "1 done, 1 pruned, 0 failed" in view.status_line()
    # the last line tells a study that ran out (each trial done: last epoch or an ASHA stop) from a Ctrl-C
    printed: list[str] = []
    view._print = printed.append
    a.status = b.status = "TERMINATED"
    a.last_result, b.last_result = {**a.last_result, "done": True}, {**b.last_result, "done": True}
    view.on_experiment_end([a, b])
    b.last_result = {"epoch": 1, "valid_rmse": 0.7}  # TERMINATED by the interrupt mid-trial, not done
    view.on_experiment_end([a, b])
    assert printed[0].startswith("study done in") and printed[1].startswith("study stopped (resume with")


def test_launch_shows_the_data_report_first_and_repeats_no_warning() -> None:
    import logging

    from rich.console import Console

    from studies.progress import print_data_summary, quiet
    from studies.runner import prepare
    from studies.spec import parse_study

    screen = Console(record=True, width=200)
    print_data_summary(prepare(parse_study(tiny_study())), screen)
    text = screen.export_text()
    assert "4999 rows, 4892 kept, 107 excluded" in text and "invalid SMILES: 8" in text and "n_train=240" in text
    quiet()
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("ray")
    logger.addHandler(handler)
    quiet()  # the once-filter reaches handlers added later too
    try:
        for _ in range(3):
            logger.warning("Ray says this every trial")
        logger.warning("something else")
    finally:
        logger.removeHandler(handler)
    assert records == ["Ray says this every trial", "something else"]


def test_help_needs_no_heavy_import() -> None:
    code = ("import sys, studies.cli; studies.cli.build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'transformers', 'trainables', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_argument_has_help_and_root_only_where_used() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.dest}: no help text"
        has_root = any(a.dest == "root" for a in command._actions if a.option_strings)
        # validate reads the store too: a models:/ teacher is looked up where launch would log.
        assert has_root == (name not in {"submit", "status", "logs", "list"}), name


@pytest.mark.parametrize(("argv", "message"), [
    (["predict", "runs:/x/model", "/nonexistent/in.csv", "-o", "out.csv"], "/nonexistent/in.csv: file not found"),
    (["report", "no-such-study"], "no study named 'no-such-study'"),
])
def test_user_mistakes_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert cli(argv) == 2
    out = capsys.readouterr().out
    assert message in out.replace("\n", " ") and "Traceback" not in out


# -- one tiny study, looked at every way ------------------------------------------------------------
@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    """3 trials run one at a time, the 2nd and 3rd clearly worse after epoch 1: ASHA stops them."""
    root = tmp_path_factory.mktemp("views")
    path = root / "views.yaml"
    path.write_text(yaml.safe_dump(tiny_study(
        name="views", num_trials=3, max_epochs=2, fixed={"batch_size": 32},
        enqueue=[{"method": "full", "lr": 0.002}, {"method": "bitfit", "lr": 1e-5},
                 {"method": "lora", "lr": 0.001, "lora_r": 8}],
        resources={"cpus_per_trial": 1, "max_concurrent_trials": 1})))
    result = launch(load_study(path), root=root)
    ray.shutdown()
    yield root, result


def _children(result) -> list:
    client = MlflowClient(result.tracking_uri)
    return client.search_runs([result.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")


def test_trial_runs_are_named_and_map_to_optuna(study) -> None:
    root, result = study
    ot = optuna.load_study(study_name="views", storage=StudyPaths.default(root).optuna_url)
    by_number = {t.number: t for t in ot.trials}
    runs = _children(result)
    assert sorted(r.info.run_name for r in runs) == ["t00 full lr=2e-3", "t01 bitfit lr=1e-5", "t02 lora r8 lr=1e-3"]
    for run in runs:
        number = int(run.data.tags["chemtune.optuna_trial"])
        assert run.info.run_name.startswith(f"t{number:02d} ")
        assert by_number[number].user_attrs["mlflow_run_id"] == run.info.run_id
        assert not {"pid", "timestamp", "time_since_restore", "time_total_s", "training_iteration", "done",
                    "iterations_since_restore", "time_this_iter_s"} & set(run.data.metrics)
        assert {"epoch", "valid_rmse", "train_loss"} <= set(run.data.metrics)


def test_asha_stops_are_pruned_in_optuna_and_tagged_in_mlflow(study) -> None:
    root, result = study
    ot = optuna.load_study(study_name="views", storage=StudyPaths.default(root).optuna_url)
    states = {t.number: t.state for t in ot.trials}
    runs = {int(r.data.tags["chemtune.optuna_trial"]): r for r in _children(result)}
    assert states[0] == optuna.trial.TrialState.COMPLETE and runs[0].data.tags["chemtune.state"] == "complete"
    pruned = [n for n, s in states.items() if s == optuna.trial.TrialState.PRUNED]
    assert pruned, "the two weak trials should have been stopped at epoch 1"
    for n in pruned:
        tags, metrics = runs[n].data.tags, runs[n].data.metrics
        assert tags["chemtune.state"] == "pruned" and tags["chemtune.pruned_at_epoch"] == "1"
        assert not any(k.startswith("test_") for k in metrics)
        assert ot.trials[n].intermediate_values  # its epoch-1 value stays for the plots
    assert ot.best_trial.number == 0


def test_the_study_run_carries_the_study(study) -> None:
    _, result = study
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    best = min((r for r in _children(result) if r.data.tags["chemtune.state"] == "complete"),
               key=lambda r: r.data.metrics["valid_rmse"])
    assert parent.data.metrics["best_valid_rmse"] == pytest.approx(best.data.metrics["valid_rmse"])
    assert parent.data.tags["chemtune.best_run_id"] == best.info.run_id
    assert best.info.run_id in parent.data.tags["mlflow.note.content"]
    assert parent.data.metrics["trials_complete"] + parent.data.metrics["trials_pruned"] == 3
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"leaderboard.csv", "leaderboard.json", "report.html", "plots", "data_report.json"} <= artifacts
    plots = {a.path.split("/")[-1] for a in client.list_artifacts(result.parent_run_id, "plots")}
    page = Path(client.download_artifacts(result.parent_run_id, "plots/optuna.html")).read_text()
    for view in ("optimization_history", "parallel_coordinate", "slice", "intermediate_values"):
        assert f"{view}.png" in plots and f'id="plot-{view}"' in page, view
    assert "optuna.html" in plots and not any(p.endswith(".html") and p != "optuna.html" for p in plots)
    assert _plotlyjs_copies(page) == 1  # once for the page, not once per view
    table = json.loads(Path(client.download_artifacts(result.parent_run_id, "leaderboard.json")).read_text())
    assert len(table["data"]) == 3


def test_leaderboard_says_what_it_is_sorted_by_and_why_test_is_empty(study, capsys: pytest.CaptureFixture) -> None:
    root, result = study
    board = leaderboard("views", result.tracking_uri)
    assert board.attrs == {"metric": "valid_rmse", "mode": "min"}
    assert list(board["state"]) == sorted(board["state"], key=lambda s: s != "complete")
    assert board.loc[0, "trial"] == "t00 full lr=2e-3" and pd.notna(board.loc[0, "test_rmse"])
    pruned = board[board["state"] == "pruned"]
    assert pruned["test_rmse"].isna().all() and pruned["note"].str.contains("stopped by ASHA").all()
    assert list(pruned["valid_rmse"]) == sorted(pruned["valid_rmse"])
    assert cli(["leaderboard", "views", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "sorted by valid_rmse (lower is better)" in out and "e+0" not in out
    assert cli(["leaderboard", "views", "--root", str(root), "--metric", "r2"]) == 2
    out = capsys.readouterr().out
    assert "did you mean valid_r2" in out and "run_id" not in out and "wall_s" not in out


def test_leaderboard_loads_mlflow_and_pandas_only(study) -> None:
    """`chemtune leaderboard` answers in seconds: a fresh interpreter loads no task (torch), Ray or Optuna."""
    root, _ = study
    code = ("import sys, studies.cli as c; rc = c.main(['leaderboard', 'views', '--root', sys.argv[1], '--format', 'csv']); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'ray', 'optuna', 'sklearn') if m in sys.modules), rc)")
    out = subprocess.run([sys.executable, "-c", code, str(root)], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[] 0"
    assert "t00 full lr=2e-3" in out.stdout  # and it did read the study


def test_register_once_with_signature_description_and_tags(study, capsys: pytest.CaptureFixture) -> None:
    root, result = study
    args = ["register", "views", "--model-name", "views-model", "--root", str(root)]
    assert cli(args) == 0
    assert cli(args) == 2
    assert "already version 1 of 'views-model'; pass --force" in capsys.readouterr().out.replace("\n", " ")
    assert cli(args + ["--force", "--metric", "test_rmse"]) == 0
    assert "warning: selecting on test_rmse" in capsys.readouterr().out.replace("\n", " ")
    client = MlflowClient(result.tracking_uri)
    version = client.get_model_version("views-model", "1")
    assert "study 'views', trial t00 full lr=2e-3" in version.description and "split hashes" in version.description.lower()
    assert version.tags["chemtune.optuna_trial"] == "0" and "split_hash.train" in version.tags
    from mlflow.models import get_model_info

    from studies.store import tracking_uri_scope

    with tracking_uri_scope(result.tracking_uri):
        signature = get_model_info("models:/views-model/1").signature
    assert signature is not None and signature.inputs.input_names() == ["smiles"]


def test_predict_keeps_columns_and_reports_bad_lines(study, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, result = study
    run_id = leaderboard("views", result.tracking_uri).loc[0, "run_id"]
    src = tmp_path / "in.csv"
    src.write_text("id,smiles,note\n1,CCO,a\n2,,b\n3,not-a-smiles,c\n\n5,c1ccccc1,e\n")
    out = tmp_path / "out.csv"
    assert cli(["predict", f"runs:/{run_id}/model", str(src), "-o", str(out), "--root", str(root)]) == 0
    text = capsys.readouterr().out.replace("\n", " ")
    assert "2 blank SMILES at lines 3, 5" in text and "1 invalid SMILES at lines 4" in text
    frame = pd.read_csv(out, keep_default_na=False)
    assert list(frame.columns[:3]) == ["id", "smiles", "note"] and len(frame) == 5
    assert frame["prediction"].astype(str).str.len().gt(0).tolist() == [True, False, False, False, True]
    assert frame.loc[1, "error"] == "blank SMILES" and frame.loc[2, "error"] == "invalid SMILES"
    assert cli(["predict", "models:/views-nope@champion", str(src), "-o", str(out), "--root", str(root)]) == 2
    text = capsys.readouterr().out
    assert text.startswith("error:") and "views-nope" in text and "Traceback" not in text


def _plotlyjs_copies(page: str) -> int:
    """How many copies of plotly.js (~4.8 MB) a page embeds (its bundle opens with this banner)."""
    from plotly.offline import get_plotlyjs

    return page.count(get_plotlyjs()[:200])


def test_report_command_writes_a_self_contained_page(study, tmp_path: Path) -> None:
    root, _ = study
    out = tmp_path / "r.html"
    assert cli(["report", "views", "--root", str(root), "-o", str(out)]) == 0
    page = out.read_text()
    assert _plotlyjs_copies(page) == 1 and page.count('class="plot"') >= 4  # one plotly.js for all the plots
    assert "<table" in page and "t00 full lr=2e-3" in page and 'id="plot-optimization_history"' in page
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"http", page)  # nothing fetched from the network


# -- real browser ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("Chromium not installed (.ci/run installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_report_opens_offline_in_a_browser(study, browser, tmp_path: Path) -> None:
    root, _ = study
    out = tmp_path / "report.html"
    assert cli(["report", "views", "--root", str(root), "-o", str(out)]) == 0
    context = browser.new_context(offline=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(out.as_uri())
    page.wait_for_selector("#plot-optimization_history .main-svg", timeout=60_000)
    assert page.locator("table.board tbody tr").count() == 3
    assert page.locator(".plot .main-svg").count() >= 2
    assert errors == []
    context.close()


def test_mlflow_ui_shows_trials_nested_under_the_study(study, browser) -> None:
    from tests.support.local_cluster import LocalMlflowServer

    _, result = study
    with LocalMlflowServer(result.tracking_uri, timeout=180) as server:
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.goto(f"{server.url}/#/experiments/{result.experiment_id}/runs", timeout=120_000)
        page.wait_for_selector(".ag-row", timeout=180_000)
        time.sleep(1)
        rows = page.locator(".ag-row")
        names = " ".join(rows.nth(i).inner_text() for i in range(rows.count()))
        assert "views" in names and "t00 full lr=2e-3" not in names  # only the study at the top level
        rows.first.locator("button").first.click()  # expand the study run
        page.wait_for_selector("text=t00 full lr=2e-3", timeout=60_000)
        for name in ("t01 bitfit lr=1e-5", "t02 lora r8 lr=1e-3"):
            assert page.locator(f"text={name}").count() >= 1
        page.close()


def test_quiet_hides_the_heartbeats_experimental_warnings_and_shows_others_once() -> None:
    """``launch`` output: Optuna's experimental-API warnings about chemtune's own heartbeat are noise to a
    user (nothing to act on); any other warning still shows, once."""
    import warnings

    import optuna

    from studies.optuna_heartbeat import heartbeat_storage
    from studies.progress import quiet

    with warnings.catch_warnings(record=True) as caught:
        quiet()
        heartbeat_storage("sqlite://", max_retry=1)  # Optuna warns: heartbeat_interval, the retry callback
        for _ in range(2):
            warnings.warn("a warning a user can act on", UserWarning)
    shown = [str(w.message) for w in caught]
    assert shown == ["a warning a user can act on"]
    assert not any(issubclass(w.category, optuna.exceptions.ExperimentalWarning) for w in caught)
