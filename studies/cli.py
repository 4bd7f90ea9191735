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

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from trainables.errors import ChemtuneError  # noqa: E402

__all__ = ["main", "build_parser"]

_console = Console(highlight=False, soft_wrap=True, width=shutil.get_terminal_size((180, 24)).columns)
_LISTS = ("datasets", "models", "methods", "spaces", "tasks", "selections")


def _tracking_uri(args: argparse.Namespace) -> str:
    from studies.tracking import StudyPaths, resolve_tracking_uri

    return resolve_tracking_uri(args.tracking_uri, StudyPaths.default(args.root))


def _cmd_validate(args: argparse.Namespace) -> int:
    from studies.runner import prepare
    from studies.spec import load_study

    spec = load_study(args.study)
    prepared = prepare(spec)
    for report in prepared.reports:
        _console.print(report.summary())
    sizes = ", ".join(f"{k}={v}" for k, v in prepared.summary.items())
    _console.print(f"[green]{args.study}: valid[/] (study {spec.name!r}, task {spec.task}, {sizes})")
    return 0


def _cmd_launch(args: argparse.Namespace) -> int:
    from studies.runner import launch
    from studies.spec import load_study

    spec = load_study(args.study)
    result = launch(spec, address=args.address, tracking_uri=args.tracking_uri, root=args.root, restart=args.restart)
    _print_board(result.leaderboard.head(10), f"study {spec.name}: {len(result.leaderboard)} trials, "
                 f"{result.num_errors} failed (MLflow run {result.parent_run_id})")
    return 0 if result.best_config is not None else 1


def _cmd_resume(args: argparse.Namespace) -> int:
    from studies.runner import resume

    result = resume(args.name, address=args.address, root=args.root)
    _print_board(result.leaderboard.head(10), f"study {args.name} resumed")
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from studies.tracking import leaderboard

    board = leaderboard(args.name, _tracking_uri(args), args.metric, args.top)
    if args.format == "csv":
        sys.stdout.write(board.to_csv(index=False))
    elif args.format == "json":
        sys.stdout.write(board.to_json(orient="records", indent=2) + "\n")
    else:
        _print_board(board, f"study {args.name}")
    return 0


def _print_board(board, title: str) -> None:  # noqa: ANN001 - a DataFrame
    table = Table(title=title)
    hidden = {"run_id", "model_uri"}
    columns = [c for c in board.columns if c not in hidden and not c.endswith("_mse")]
    for column in columns:
        table.add_column(column, justify="right" if board[column].dtype.kind in "fi" else "left")
    for _, row in board.iterrows():
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in (row[c] for c in columns)])
    _console.print(table)


def _cmd_register(args: argparse.Namespace) -> int:
    from studies.tracking import register_best

    if args.top > 1:  # one pyfunc averaging the top-N trials (studies/ensemble.py)
        from studies.ensemble import register_ensemble

        version = register_ensemble(args.name, args.model_name, _tracking_uri(args), args.top, args.alias, args.metric)
    else:
        version = register_best(args.name, args.model_name, _tracking_uri(args), args.alias, args.metric)
    alias = f" (alias @{args.alias})" if args.alias else ""
    _console.print(f"registered {args.model_name} version {version.version}{alias}: models:/{args.model_name}/{version.version}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import mlflow
    import pandas as pd

    from studies.tracking import tracking_uri_scope

    frame = pd.read_csv(args.input)
    if args.smiles_column not in frame.columns:
        raise ChemtuneError(f"{args.input}: no column {args.smiles_column!r}; the file has {list(frame.columns)}")
    with tracking_uri_scope(_tracking_uri(args)):
        model = mlflow.pyfunc.load_model(args.model_uri)
    out = model.predict(frame[[args.smiles_column]].rename(columns={args.smiles_column: "smiles"}))
    out.to_csv(args.output, index=False)
    bad = int((out["error"] != "").sum()) if "error" in out else 0
    _console.print(f"wrote {len(out)} predictions to {args.output} ({bad} invalid SMILES, see the error column)")
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    from studies.tracking import StudyPaths

    paths = StudyPaths.default(args.root)
    cmd = ["mlflow", "ui", "--backend-store-uri", paths.mlflow_uri, "--default-artifact-root", paths.artifacts,
           "--host", args.host, "--port", str(args.port)]
    os.execvp(cmd[0], cmd)
    return 0  # pragma: no cover - execvp does not return


def _cmd_list(args: argparse.Namespace) -> int:
    from search_spaces import SPACES
    from trainables import TASKS
    from trainables.data.datasets import DATASETS
    from trainables.methods import METHODS
    from trainables.models.backbones import BACKBONES
    from trainables.selectors import SELECTORS

    registry = {"datasets": DATASETS, "models": BACKBONES, "methods": METHODS, "spaces": SPACES,
                "tasks": TASKS, "selections": SELECTORS}[args.what]
    table = Table(title=args.what)
    table.add_column("name")
    table.add_column("description")
    for name in registry.names():
        help_text = registry.help(name)
        if args.what == "spaces":
            space = SPACES.get(name)
            help_text += "".join(f"\n  {p.name}: {p.describe()}" + (f" - {p.help}" if p.help else "") for p in space.params)
        table.add_row(name, help_text)
    _console.print(table)
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from cluster.jobs import submit

    job_id = submit(args.study, args.address, ship_code=not args.installed, restart=args.restart)
    print(job_id)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from cluster.jobs import status, wait

    print(wait(args.job_id, args.address) if args.wait else status(args.job_id, args.address))
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    from cluster.jobs import logs

    print(logs(args.job_id, args.address), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; list choices come from the registries."""
    parser = argparse.ArgumentParser(prog="chemtune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str) -> argparse.ArgumentParser:  # noqa: ANN001
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        p.add_argument("--root", default=None, help="embedded store folder (default $CHEMTUNE_HOME or ./chemtune-runs)")
        return p

    p = command("validate", _cmd_validate, "check a study file and its data (the checks launch runs first)")
    p.add_argument("study", type=Path)
    p = command("launch", _cmd_launch, "run a study on Ray Tune, tracked in MLflow")
    p.add_argument("study", type=Path)
    p.add_argument("--address", default=None, help="Ray cluster (auto, ray://HOST:10001); default: local Ray")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or local)")
    p.add_argument("--restart", action="store_true", help="start over if this study was launched before")
    p = command("resume", _cmd_resume, "continue an interrupted study from its checkpoints")
    p.add_argument("name")
    p.add_argument("--address", default=None)
    p = command("leaderboard", _cmd_leaderboard, "trials of a study, best first")
    p.add_argument("name")
    p.add_argument("--metric", default=None, help="sort by this metric (default: the study's)")
    p.add_argument("--top", type=int, default=None)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--tracking-uri", default=None)
    p = command("register", _cmd_register, "register the best trial's model in the MLflow model registry")
    p.add_argument("name")
    p.add_argument("--model-name", required=True)
    p.add_argument("--alias", default="champion", help="alias for the new version ('' for none)")
    p.add_argument("--metric", default=None)
    p.add_argument("--top", type=int, default=1, help="N > 1: register one model averaging the top-N trials")
    p.add_argument("--tracking-uri", default=None)
    p = command("predict", _cmd_predict, "predict with an MLflow model (models:/NAME@champion, runs:/ID/model)")
    p.add_argument("model_uri")
    p.add_argument("input", type=Path, help="CSV with a SMILES column")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--smiles-column", default="smiles")
    p.add_argument("--tracking-uri", default=None)
    p = command("ui", _cmd_ui, "MLflow UI over the embedded store")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p = command("submit", _cmd_submit, "run a study on a Ray cluster as a Ray job (prints the job id)")
    p.add_argument("study", type=Path)
    p.add_argument("--address", required=True, help="Ray dashboard / Jobs API, e.g. http://HOST:8265")
    p.add_argument("--installed", action="store_true", help="chemtune is installed on the cluster: do not upload it")
    p.add_argument("--restart", action="store_true", help="start over if this study was launched before")
    p = command("status", _cmd_status, "status of a submitted study job")
    p.add_argument("job_id")
    p.add_argument("--address", required=True, help="Ray dashboard / Jobs API, e.g. http://HOST:8265")
    p.add_argument("--wait", action="store_true", help="wait until the job ends; print its final status")
    p = command("logs", _cmd_logs, "output of a submitted study job")
    p.add_argument("job_id")
    p.add_argument("--address", required=True, help="Ray dashboard / Jobs API, e.g. http://HOST:8265")
    p = command("list", _cmd_list, "what is registered")
    p.add_argument("what", choices=_LISTS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chemtune`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ChemtuneError as err:
        _console.print(f"[red]error:[/] {err}", markup=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
