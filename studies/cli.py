"""``chemtune``: validate, launch, resume and browse studies; register and serve the winners."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

# Nothing heavy at import time (`chemtune --help` stays under a second): each verb imports what it
# needs; rich, MLflow, Ray and the tasks (torch) load only when used.

__all__ = ["main", "build_parser"]

_LISTS = ("datasets", "models", "methods", "spaces", "tasks", "selections")


class _LazyConsole:
    """rich's Console, created on first use."""

    _console = None

    def __getattr__(self, name: str):  # noqa: ANN204
        if _LazyConsole._console is None:
            from rich.console import Console

            _LazyConsole._console = Console(highlight=False, soft_wrap=True,
                                            width=shutil.get_terminal_size((180, 24)).columns)
        return getattr(_LazyConsole._console, name)


_console = _LazyConsole()


def _tracking_uri(args: argparse.Namespace) -> str:
    from studies.store import StudyPaths, resolve_tracking_uri

    return resolve_tracking_uri(args.tracking_uri, StudyPaths.default(args.root))


def _checked_study(path: Path):  # noqa: ANN202 - a StudySpec (studies.spec stays unimported until here)
    """The study file, its data files checked first: a bad one is refused before validation loads the plug-ins
    (torch) and before Ray and MLflow load, in seconds."""
    from studies.spec import input_files, parse_study, read_study
    from trainables.inputs import check_inputs

    data = read_study(path)
    check_inputs(input_files(data))
    return parse_study(data, source=str(path))


def _cmd_validate(args: argparse.Namespace) -> int:
    from studies.redact import adopt_credentials
    from studies.store import StudyPaths

    spec = _checked_study(args.study)
    from studies.runner import prepare

    # The store `launch` would use (a teacher named models:/... is looked up there); nothing is created.
    uri = adopt_credentials(args.tracking_uri or spec.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                            or StudyPaths.default(args.root).mlflow_uri)
    from studies.teaching import plan_teacher, with_teacher

    teacher = plan_teacher(spec, uri)  # a bad teacher stage file is refused here, before the data
    prepared = prepare(with_teacher(spec, teacher) if teacher is not None and teacher.cached else spec, uri)
    for report in prepared.reports:
        _console.print(report.summary())
    sizes = ", ".join(f"{k}={v}" for k, v in prepared.summary.items())
    _console.print(f"[green]{args.study}: valid[/] (study {spec.name!r}, task {spec.task}, {sizes})")
    _print_stage(spec, prepared, uri)
    if teacher is not None:
        _print_teacher(spec, teacher, prepared, uri)
    return 0


def _print_teacher(spec, stage, prepared, uri: str) -> None:  # noqa: ANN001 - a StudySpec, its Stage, Prepared
    """Whether the study's teacher stage is cached; its coverage when it is, else that launch trains it first."""
    s, counts = stage.spec, prepared.summary
    share = (f"{counts['teacher_share_rows']} reactions ({counts['teacher_share_products']} products), the student "
             f"trains on the other {counts['student_share_rows']}")
    if stage.cached:
        _console.print(f"teacher stage {stage.file}: checkpoint cached at {stage.folder} (launch reuses it; trained on "
                       f"{share}); its labels: {counts['teacher_eligible']} usable, {counts['teacher_unusable']} "
                       f"unusable, gamma coverage checked")
        return
    _console.print(f"teacher stage {stage.file}: checkpoint not cached (key {stage.key}); `chemtune launch` trains it "
                   f"first: study {s.name!r}, {s.num_trials} trial(s) x {s.max_epochs} epoch(s) of {s.model.name} on "
                   f"{share}; gamma coverage is checked once the teacher has predicted (launch refuses a gamma its "
                   "usable labels cannot cover)")
    if s.model.pretrain and s.model.pretrain != spec.model.pretrain:  # its own pretraining stage
        _print_stage(s, stage.prepared, uri)


def _print_stage(spec, prepared, uri: str) -> None:  # noqa: ANN001 - a StudySpec and its Prepared
    """Whether the study's pretrained checkpoint (its ``model.pretrain`` stage, or a pretrain study's own) is cached."""
    from studies.pretraining import STAGE_JSON, checkpoint_dir, plan_stage, stage_key

    if spec.task == "pretrain":
        folder = checkpoint_dir(spec, stage_key(spec, prepared.tags["chemtune.corpus_hash"]))
        cached = (folder / STAGE_JSON).is_file()
        state = f"cached at {folder}" if cached else f"not cached yet (launch writes it to {folder})"
        _console.print(f"checkpoint: {state}")
        return
    stage = plan_stage(spec, uri)
    if stage is None:
        return
    for report in stage.prepared.reports:
        _console.print(report.summary())
    if stage.cached:
        _console.print(f"pretraining stage {stage.file}: checkpoint cached at {stage.folder} (launch reuses it)")
    else:
        s = stage.spec
        _console.print(f"pretraining stage {stage.file}: checkpoint not cached (key {stage.key}); `chemtune launch` "
                       f"pretrains it first: study {s.name!r}, {s.num_trials} trial(s) x {s.max_epochs} epoch(s) of "
                       f"{s.model.name} on {stage.prepared.summary['n_train']} molecules")


def _cmd_launch(args: argparse.Namespace) -> int:
    spec = _checked_study(args.study)
    from studies.runner import launch

    result = launch(spec, address=args.address, tracking_uri=args.tracking_uri, root=args.root, restart=args.restart,
                    join=args.join, trials=args.trials)
    board = result.leaderboard
    trials = int((board["role"] == "trial").sum()) if not board.empty else 0  # not the baseline rows
    _print_board(board.head(10), f"study {spec.name}: {trials} trials, "
                 f"{result.num_errors} failed (MLflow run {result.parent_run_id})")
    if result.report is not None:
        _console.print(f"report: {result.report} (also on the study's MLflow run; `chemtune ui` to browse)")
    return 0 if result.best_config is not None else 1


def _cmd_resume(args: argparse.Namespace) -> int:
    from studies.spec import read_study
    from studies.store import StudyPaths

    saved = StudyPaths.default(args.root).study_file(args.name)
    if saved.exists():  # its saved copy checked before Ray loads: a planted YAML tag is one line, in seconds
        read_study(saved)
    from studies.runner import resume

    result = resume(args.name, address=args.address, root=args.root)
    _print_board(result.leaderboard.head(10), f"study {args.name} resumed")
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from studies.results import leaderboard

    board = leaderboard(args.name, _tracking_uri(args), args.metric, args.top)
    if args.format == "csv":
        sys.stdout.write(board.to_csv(index=False))
    elif args.format == "json":
        sys.stdout.write(board.to_json(orient="records", indent=2) + "\n")
    else:
        _print_board(board, f"study {args.name}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from studies.compare import compare

    table, _ = compare(args.name, args.paper, _tracking_uri(args), tuned=args.tuned, costs=args.costs)
    _print_board(table, f"study {args.name} vs paper table {args.paper} (valid-selected, test reported; "
                 "logged as compare/" + args.paper + ".md on the study run)")
    return 0


def _print_board(board, title: str) -> None:  # noqa: ANN001 - a DataFrame
    from rich.table import Table

    from studies.results import COUNTS, format_value
    from trainables.metrics import COSTS

    metric, mode = board.attrs.get("metric"), board.attrs.get("mode")
    caption = (f"sorted by {metric} ({'lower' if mode == 'min' else 'higher'} is better), complete trials first; "
               "pruned = stopped early by ASHA (no test scores)") if metric else None
    table = Table(title=title, caption=caption)
    hidden = {"run_id", "model_uri", "optuna_trial", "status", "role"}  # baseline:/ensemble: rows say their role
    columns = [c for c in board.columns if c not in hidden and not c.endswith("_mse")
               and not (c in COSTS and board[c].isna().all())]  # a cost no row reported (older studies)
    for column in columns:
        numeric = board[column].dtype.kind in "fi" or column in COUNTS
        table.add_column(column, justify="right" if numeric else "left", no_wrap=column in ("trial", "state"))
    for _, row in board.iterrows():
        table.add_row(*["*" * bool(row[c]) if c == "pareto" else f"{row[c]:.1f}" if c == "wall_s"
                        else format_value(row[c], c in COUNTS) for c in columns])
    _console.print(table)


def _cmd_report(args: argparse.Namespace) -> int:
    from studies.report import optuna_url_for, refresh_study

    out = refresh_study(args.name, _tracking_uri(args), optuna_url_for(args.name, args.root),
                        args.output or Path(f"{args.name}-report.html"))
    _console.print(f"wrote {out} (self-contained; also logged to the study's MLflow run as report.html)")
    return 0


def _cmd_register(args: argparse.Namespace) -> int:
    from studies.results import is_test_metric, register_best

    if args.metric and is_test_metric(args.metric):
        _console.print(f"[yellow]warning:[/] selecting on {args.metric}: the test split is then used to choose "
                       "the model and no longer estimates its error; prefer a valid_ metric")
    if args.top < 1:
        _console.print(f"[red]error:[/] --top {args.top}: give 1 (the best trial) or more (an ensemble)")
        return 2
    if args.refit:  # retrain the chosen configuration on train + valid first (studies/promote.py)
        return _cmd_promote(args)
    if args.top > 1:  # one pyfunc averaging the top-N trials (studies/ensemble.py)
        from studies.ensemble import register_ensemble

        version = register_ensemble(args.name, args.model_name, _tracking_uri(args), args.top, args.alias or None,
                                    args.metric)
    else:
        version = register_best(args.name, args.model_name, _tracking_uri(args), args.alias or None, args.metric,
                                force=args.force, rule=args.rule)
    alias = f" (alias @{args.alias})" if args.alias else ""
    _console.print(f"registered {args.model_name} version {version.version}{alias}: models:/{args.model_name}/{version.version}")
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from studies.promote import promote

    version = promote(args.name, args.model_name, _tracking_uri(args), rule=args.rule, seeds=args.seeds,
                      alias=args.alias or None, metric=args.metric)
    alias = f" (alias @{args.alias})" if args.alias else ""
    _console.print(f"refit on train + valid with {args.seeds} seed(s), test scored once; registered "
                   f"{args.model_name} version {version.version}{alias}: models:/{args.model_name}/{version.version}")
    return 0


def _user_error(message: str) -> Exception:
    from trainables.errors import ChemtuneError

    return ChemtuneError(message)


def _cmd_predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from trainables.data.tables import read_csv_columns
    from trainables.inputs import long_reason, too_long

    # checked and read in bounded memory; blank lines are rows too: reported with their line numbers, not dropped
    frame = read_csv_columns(args.input, [args.smiles_column], "column (choose one with --smiles-column)",
                             keep_blank=True)
    long_lines = frame.attrs["long_lines"]  # lines too long to read: counted and named below, never parsed
    lines = pd.Series(frame.attrs["lines"], index=frame.index)  # each row's line in the file
    frame.attrs = {}
    smiles = frame[args.smiles_column].fillna("").astype(str).str.strip()
    over = smiles.map(too_long)
    smiles[over] = ""  # the model never sees it; its row gets the reason in the error column
    blank = smiles == ""
    import mlflow  # after the input is read: a bad file is refused before MLflow loads

    from studies.store import tracking_uri_scope

    with tracking_uri_scope(_tracking_uri(args)):
        model = mlflow.pyfunc.load_model(args.model_uri)
    schema = model.metadata.get_input_schema()  # the column the model reads: smiles, or a retro model's product
    column = schema.input_names()[0] if schema is not None and schema.has_input_names() else "smiles"
    out = model.predict(pd.DataFrame({column: smiles[~blank].tolist()}))
    if len(out) != int((~blank).sum()):
        raise _user_error(f"{args.model_uri}: returned {len(out)} rows for {int((~blank).sum())} inputs")
    out.index = frame.index[~blank]
    new = [c for c in out.columns if c != column]  # the model echoes its input
    result = frame.copy()
    for column in new:  # the input's columns first, unchanged; the model's beside them
        name = column if column not in frame.columns else f"predicted_{column}"
        result[name] = out[column].reindex(frame.index)
    if "error" in result:
        result.loc[blank, "error"] = "blank SMILES"
        result.loc[over, "error"] = long_reason()
    result.to_csv(args.output, index=False)
    invalid = ~blank & (result["error"].fillna("") != "") if "error" in result else blank & False
    predicted = int((~blank & ~invalid).sum())
    blank = blank & ~over

    def where(mask) -> str:  # noqa: ANN001
        numbers = [str(n) for n in lines[mask][:10]]
        return ", ".join(numbers) + (", …" if int(mask.sum()) > 10 else "")

    _console.print(f"wrote {len(result)} rows to {args.output} ({predicted} predicted)")
    if blank.any():
        _console.print(f"[yellow]{int(blank.sum())} blank SMILES[/] at lines {where(blank)}")
    if invalid.any():
        _console.print(f"[yellow]{int(invalid.sum())} invalid SMILES[/] at lines {where(invalid)} (see the error column)")
    if over.any() or long_lines:
        numbers = sorted([*[int(n) for n in lines[over]], *(n for n, _ in long_lines)])
        _console.print(f"[yellow]{len(numbers)} rows with a {long_reason()}[/] at lines "
                       f"{', '.join(map(str, numbers[:10]))}{', …' if len(numbers) > 10 else ''}"
                       + (f" ({len(long_lines)} too long to read are not in the output)" if long_lines else ""))
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    from studies.store import StudyPaths

    paths = StudyPaths.default(args.root)
    cmd = ["mlflow", "ui", "--backend-store-uri", paths.mlflow_uri, "--default-artifact-root", paths.artifacts,
           "--host", args.host, "--port", str(args.port)]
    os.execvp(cmd[0], cmd)
    return 0  # pragma: no cover - execvp does not return


# Where each listable registry lives: `list` imports only that one (the plug-ins stay unloaded).
_REGISTRIES = {"datasets": "trainables.data.datasets:DATASETS", "models": "trainables.models.backbones:BACKBONES",
               "methods": "trainables.methods:METHODS", "spaces": "search_spaces:SPACES",
               "tasks": "trainables.base:TASKS", "selections": "trainables.selection.base:SELECTORS"}


def _cmd_list(args: argparse.Namespace) -> int:
    import importlib

    from rich.table import Table

    module, _, attr = _REGISTRIES[args.what].partition(":")
    registry = getattr(importlib.import_module(module), attr)
    table = Table(title=args.what)
    table.add_column("name")
    table.add_column("description")
    for name in registry.names():
        help_text = registry.help(name)
        if args.what == "spaces":
            space = registry.get(name)
            help_text += "".join(f"\n  {p.name}: {p.describe()}" + (f" - {p.help}" if p.help else "") for p in space.declared)
        table.add_row(name, help_text)
    _console.print(table)
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from cluster.jobs import submit
    from studies.spec import load_study

    job_id = submit(args.study, args.address, load_study=load_study, ship_code=not args.installed,
                    restart=args.restart, tracking_uri=args.tracking_uri)
    if os.environ.get("MLFLOW_TRACKING_PASSWORD") and not args.tracking_uri:  # the job gets the URI, not the login
        print("note: MLFLOW_TRACKING_PASSWORD (or a password in MLFLOW_TRACKING_URI) is not sent with the job; the "
              "cluster's nodes need their own (cluster/README.md, section 1)", file=sys.stderr)
    print(job_id)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from cluster.jobs import status, wait

    try:
        state = wait(args.job_id, args.address, timeout=args.timeout) if args.wait else status(args.job_id, args.address)
    except TimeoutError as err:
        _console.print(f"[red]error:[/] {err}", markup=True)
        return 1
    print(state)
    return 1 if state in ("FAILED", "STOPPED") else 0  # scripts see a failed study


def _cmd_logs(args: argparse.Namespace) -> int:
    from cluster.jobs import logs

    print(logs(args.job_id, args.address), end="")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from studies.health import diagnose, reconcile
    from studies.tracking import StudyPaths

    paths = StudyPaths.default(args.root)
    if args.reconcile:
        ended = reconcile(paths, args.name)
        _console.print(f"marked {len(ended)} orphaned run(s) KILLED")
    d = diagnose(paths, args.name)
    _console.print(f"study {d.name}: driver {d.driver}")
    _console.print("Optuna trials: " + (", ".join(f"{k} {v}" for k, v in sorted(d.optuna_states.items())) or "none"))
    _console.print("MLflow trial runs: " + (", ".join(f"{k} {v}" for k, v in sorted(d.mlflow_states.items())) or "none"))
    _console.print(f"orphaned runs (RUNNING, no live driver): {len(d.orphans)}" + "".join(f"\n  {o}" for o in d.orphans))
    _console.print("last valid checkpoint per trial:" + ("".join(f"\n  {t}: {c}" for t, c in d.checkpoints.items()) or " none"))
    _console.print("resume would: " + "; ".join(d.resume_plan))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; ``list`` choices name the registries."""
    parser = argparse.ArgumentParser(prog="chemtune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, help: str, store: bool = True) -> argparse.ArgumentParser:  # noqa: ANN001
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func, root=None)
        if store:  # only the verbs that read or write the embedded store
            p.add_argument("--root", default=None, help="embedded store folder (default $CHEMTUNE_HOME or ./chemtune-runs)")
        return p

    def tracking(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tracking-uri", default=None,
                       help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the embedded store)")

    study_help = "study YAML file (reference: docs/study-file.md)"
    name_help = "study name (the `name:` in its YAML; also the MLflow experiment)"
    jobs_help = "Ray dashboard / Jobs API, e.g. http://HOST:8265"
    p = command("validate", _cmd_validate, "check a study file and its data (the checks launch runs first)")
    p.add_argument("study", type=Path, help=study_help)
    p.add_argument("--tracking-uri", default=None, help="MLflow store of a models:/ teacher (default: as launch)")
    p = command("launch", _cmd_launch, "run a study on Ray Tune, tracked in MLflow; ends with a report")
    p.add_argument("study", type=Path, help=study_help)
    p.add_argument("--address", default=None, help="Ray cluster (auto, ray://HOST:10001); default: local Ray")
    tracking(p)
    p.add_argument("--restart", action="store_true", help="start over if this study was launched before")
    p.add_argument("--join", action="store_true", help="one of several processes on this study: create or attach to "
                   "its Optuna study (shared RDB storage) and MLflow parent run, and run --trials of its trials")
    p.add_argument("--trials", type=int, default=None, help="with --join: this process's share of the trials "
                   "(default the study's num_trials); the study's total is the sum of the shares")
    p = command("resume", _cmd_resume, "continue an interrupted study from its checkpoints")
    p.add_argument("name", help=name_help)
    p.add_argument("--address", default=None, help="Ray cluster (default: the one the study was launched on, else local)")
    p = command("leaderboard", _cmd_leaderboard, "trials of a study: complete ones best first, then pruned, then failed")
    p.add_argument("name", help=name_help)
    p.add_argument("--metric", "--sort", dest="metric", default=None,
                   help="sort by this logged metric or cost, e.g. valid_r2 or trainable_params (default: the study's)")
    p.add_argument("--top", type=int, default=None, help="show only the first N rows")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (default table)")
    tracking(p)
    p = command("report", _cmd_report, "one self-contained HTML page for a study (also logged to its MLflow run)")
    p.add_argument("name", help=name_help)
    p.add_argument("-o", "--output", type=Path, default=None, help="where to write it (default: NAME-report.html)")
    tracking(p)
    p = command("compare", _cmd_compare, "a study's results in a paper table's layout, beside the published numbers")
    p.add_argument("name", help=name_help)
    p.add_argument("--paper", required=True, help="table in studies/papers/published.yaml (retro_table2, ...)")
    p.add_argument("--tuned", default=None, metavar="STUDY2",
                   help="a second study (chemtune's tuned protocol) for the 'tuned' column; NAME is the as-published one")
    p.add_argument("--costs", action="store_true", help="add each row's costs (trainable_params, device_seconds, "
                   "peak_memory_mb, predict_ms_per_1k) beside its scores")
    tracking(p)
    p = command("register", _cmd_register, "register the best complete trial's model in the MLflow model registry")
    p.add_argument("name", help=name_help)
    p.add_argument("--model-name", required=True, help="registered model name (created if new)")
    p.add_argument("--alias", default="champion", help="alias for the new version ('' for none)")
    p.add_argument("--metric", default=None, help="choose the best trial by this metric (default: the study's; "
                   "a test_ metric is allowed with a warning)")
    p.add_argument("--top", type=int, default=1, help="N > 1: register one model averaging the top-N complete trials")
    p.add_argument("--force", action="store_true", help="register a trial that is already a version of this model")
    rule_help = ("which complete trial: best (by the metric), cheapest-within:DELTA (the cheapest trial within DELTA "
                 "of the best, cost: the study's first cost objective, else trainable_params) or knee (of the Pareto "
                 "front); recorded on the version")
    p.add_argument("--rule", default="best", help=rule_help)
    p.add_argument("--refit", action="store_true", help="retrain the chosen trial on train + valid first (= promote)")
    p.add_argument("--seeds", type=int, default=1, help="with --refit: refits with this many seeds (an ensemble if > 1)")
    tracking(p)
    p = command("promote", _cmd_promote, "refit the chosen trial on train + valid (S seeds), score test once, register")
    p.add_argument("name", help=name_help)
    p.add_argument("--model-name", required=True, help="registered model name (created if new)")
    p.add_argument("--alias", default="champion", help="alias for the new version ('' for none)")
    p.add_argument("--rule", default="best", help=rule_help)
    p.add_argument("--seeds", type=int, default=1, help="refits with this many seeds; S > 1 registers their ensemble")
    p.add_argument("--metric", default=None, help="the metric the rule reads (default: the study's)")
    tracking(p)
    p = command("predict", _cmd_predict, "predict with an MLflow model (models:/NAME@champion, runs:/ID/model)")
    p.add_argument("model_uri", help="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/model")
    p.add_argument("input", type=Path, help="CSV with a SMILES column; its other columns are kept in the output")
    p.add_argument("-o", "--output", type=Path, required=True, help="CSV to write: the input plus prediction columns")
    p.add_argument("--smiles-column", default="smiles", help="the input's SMILES column (default smiles)")
    tracking(p)
    p = command("ui", _cmd_ui, "MLflow UI over the embedded store")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default loopback only)")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    p = command("submit", _cmd_submit, "run a study on a Ray cluster as a Ray job (prints the job id)", store=False)
    p.add_argument("study", type=Path, help=study_help)
    p.add_argument("--address", required=True, help=jobs_help)
    p.add_argument("--installed", action="store_true", help="chemtune is installed on the cluster: do not upload it")
    p.add_argument("--restart", action="store_true", help="start over if this study was launched before")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI for the job (default: the study's, "
                   "else $MLFLOW_TRACKING_URI of this shell, else the cluster's)")
    p = command("status", _cmd_status, "status of a submitted study job (exit 1 if FAILED or STOPPED)", store=False)
    p.add_argument("job_id", help="the id `chemtune submit` printed")
    p.add_argument("--address", required=True, help=jobs_help)
    p.add_argument("--wait", action="store_true", help="wait until the job ends; print its final status")
    p.add_argument("--timeout", type=float, default=24 * 3600, help="seconds --wait waits at most")
    p = command("logs", _cmd_logs, "output of a submitted study job", store=False)
    p.add_argument("job_id", help="the id `chemtune submit` printed")
    p.add_argument("--address", required=True, help=jobs_help)
    p = command("list", _cmd_list, "what is registered", store=False)
    p.add_argument("what", choices=_LISTS, help="which registry: " + ", ".join(_LISTS))
    p = command("doctor", _cmd_doctor, "a study's health: trials by state, orphaned runs, checkpoints, what resume would do")
    p.add_argument("name", help=name_help)
    p.add_argument("--reconcile", action="store_true", help="mark runs left RUNNING by a dead driver KILLED")
    return parser


def _is_user_error(err: BaseException) -> bool:
    """chemtune's bad-input errors, and MLflow's for a wrong model URI or alias (when loaded at all:
    checking never imports the tasks)."""
    errors = sys.modules.get("trainables.errors")
    if errors is not None and isinstance(err, errors.ChemtuneError):
        return True
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")
    return mlflow_exceptions is not None and isinstance(err, mlflow_exceptions.MlflowException)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chemtune`` console script."""
    from studies.redact import guard_process

    raw = list(sys.argv[1:] if argv is None else argv)  # parsed as given; sys.argv is redacted (Ray records it)
    restore = guard_process(sys.argv)  # private files, no password in any output or recorded command line
    try:
        return _run(build_parser().parse_args(raw))
    finally:
        if argv is not None:  # called in-process (a test, a notebook): its umask and streams are its own again
            restore()


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - a user mistake is one line; anything else a traceback
        if not _is_user_error(err):
            raise
        from rich.markup import escape

        from studies.redact import redact

        message = str(err)
        if type(err).__module__.startswith("mlflow"):  # MLflow appends server detail after the first line
            message = (getattr(err, "message", None) or message).strip().splitlines()[0]
        _console.print(f"[red]error:[/] {escape(redact(message) or type(err).__name__)}", markup=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
