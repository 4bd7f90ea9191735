"""The study's views: Optuna's plots and the leaderboard on the study run, and one HTML report.

Plots are plotly (interactive HTML, plotly.js embedded so they open offline, in the MLflow UI's
artifact view too) and matplotlib (PNG). plotly.js (~4.8 MB) is embedded once per page: the report
is one page, and the study run's Optuna views are one page (``plots/optuna.html``) beside a PNG per
view. ``refresh_study`` runs at the end of every study and on ``chemtune report``.
"""

from __future__ import annotations

import html
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from studies.results import COUNTS, format_value, leaderboard, study_run
from studies.store import PARENT_TAG, TAG_ROLE, StudyPaths

__all__ = ["refresh_study", "optuna_plots", "build_report", "pareto_figure", "PLOTS"]

log = logging.getLogger(__name__)

# name -> (plotly function, matplotlib function, what it needs): Optuna's views of a study.
PLOTS: dict[str, str] = {
    "optimization_history": "plot_optimization_history",
    "param_importances": "plot_param_importances",
    "parallel_coordinate": "plot_parallel_coordinate",
    "slice": "plot_slice",
    "intermediate_values": "plot_intermediate_values",
    "pareto_front": "plot_pareto_front",  # multi-objective studies only (a one-metric study raises ValueError)
}


def _load_optuna(name: str, optuna_url: str) -> Any | None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=optuna_url)
    except KeyError:
        return None


def optuna_plots(study: Any) -> dict[str, Any]:
    """Optuna's plotly figures for ``study``, each titled; a view the study cannot draw yet
    (importances need two complete trials with different parameters) is left out, not faked."""
    import optuna.visualization as vis

    figures = {}
    for key, function in PLOTS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                figures[key] = getattr(vis, function)(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:  # too few trials for this view
            log.info("no %s plot: %s", key, err)
    return figures


def pareto_figure(study: Any, board: pd.DataFrame) -> Any | None:
    """Optuna's Pareto-front plot of a multi-objective study, with the study's baseline and ensemble rows that
    report every objective drawn as reference points (they are not Optuna trials); ``None`` for one objective."""
    import optuna.visualization as vis
    import plotly.graph_objects as go

    goals = board.attrs.get("objectives") or []
    if len(goals) != 2 or study is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fig = vis.plot_pareto_front(study, target_names=goals)
    except (ValueError, RuntimeError) as err:
        log.info("no Pareto front plot: %s", err)
        return None
    refs = board[(board["role"] != "trial") & board[goals].notna().all(axis=1)] if set(goals) <= set(board) else []
    if len(refs):
        fig.add_trace(go.Scatter(x=refs[goals[0]], y=refs[goals[1]], mode="markers+text", name="reference",
                                 text=refs["trial"], textposition="top center",
                                 marker={"symbol": "x", "size": 11, "color": "black"}))
    return fig


def _pareto_html(board: pd.DataFrame) -> str:
    """The front's rows of a multi-objective study's leaderboard, or ``""``."""
    goals = board.attrs.get("objectives") or []
    if not goals or board.empty or "pareto" not in board:
        return ""
    front = board[board["pareto"]][["trial", *goals, *(c for c in board if c.startswith("test_"))]]
    return "<h2>Pareto front</h2>" + _table(front, f"complete trials no other trial beats on all of {', '.join(goals)}")


def _plots_html(figures: list[tuple[str, Any]]) -> str:
    """The figures as ``div.plot#plot-KEY`` blocks; they need plotly.js on the page (:func:`_page`)."""
    return "".join(f'<div class="plot" id="plot-{key}">' + fig.to_html(full_html=False, include_plotlyjs=False)
                   + "</div>" for key, fig in figures)


def _page(title: str, body: str) -> str:
    """A self-contained HTML page: plotly.js embedded once in the head (no network needed)."""
    from plotly.offline import get_plotlyjs

    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head>"
            f"<body>{body}</body></html>")


def _write_plots(study: Any, folder: Path) -> list[Path]:
    """``folder/optuna.html`` (every view the study can draw, one self-contained page) and ``folder/KEY.png``
    per view: one page, not one per view, because each page carries its own plotly.js."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as mvis

    from trainables.io import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    figures = optuna_plots(study)
    page = folder / "optuna.html"
    atomic_write_text(page, _page(f"Optuna views of study {study.study_name}",
                                  f"<h1>Optuna views of study {html.escape(study.study_name)}</h1>"
                                  + _plots_html(list(figures.items()))))
    written = [page]
    for key in figures:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = getattr(mvis, PLOTS[key])(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
            fig.savefig(folder / f"{key}.png", dpi=110, bbox_inches="tight")
            plt.close(fig)
            written.append(folder / f"{key}.png")
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            log.info("no %s PNG: %s", key, err)
    return written


def _learning_curves(client: Any, board: pd.DataFrame, metric: str) -> Any | None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for _, row in board.iterrows():
        history = sorted(client.get_metric_history(row["run_id"], metric), key=lambda m: m.step)
        if history:
            fig.add_trace(go.Scatter(x=[m.step for m in history], y=[m.value for m in history],
                                     mode="lines+markers", name=f"{row['trial']} ({row['state']})"))
    if not fig.data:
        return None
    fig.update_layout(title=f"Learning curves: {metric} per epoch", xaxis_title="epoch", yaxis_title=metric)
    return fig


def _table(frame: pd.DataFrame, caption: str, css: str = "board") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_value(v, c in COUNTS))}</td>" for c, v in zip(frame.columns, row))
        + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return (f'<table class="{css}"><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def _data_report_html(reports: list[dict[str, Any]]) -> str:
    parts = []
    for report in reports:
        rows = [{"reason": reason, "count": info.get("count"),
                 "first rows": ", ".join(str(x) for x in (info.get("rows") or [])[:10])}
                for reason, info in (report.get("issues") or {}).items()]
        title = " ".join(f"{k}={report[k]}" for k in ("source", "n_rows", "n_kept", "n_excluded") if k in report)
        parts.append(_table(pd.DataFrame(rows, columns=["reason", "count", "first rows"]), title or "data", "data")
                     if rows else f"<p>{html.escape(title)}: no rows excluded</p>")
    return "".join(parts) or "<p>no data report</p>"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}caption{text-align:left;
font-weight:600;padding:4px 0}h2{margin-top:2em}.muted{color:#777}"""


def build_report(name: str, tracking_uri: str, optuna_url: str | None, out: Path) -> Path:
    """Write ``out``: one self-contained HTML page (no network) with the leaderboard, learning curves
    per trial, Optuna's plots, the data report, the split hashes and the baseline row when a
    study has one (a trial run tagged ``chemtune.role=baseline``)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment_id, parent = study_run(client, name)
    board = leaderboard(name, tracking_uri)
    tags = parent.data.tags
    metric, mode = board.attrs.get("metric", tags.get("chemtune.metric")), board.attrs.get("mode", tags.get("chemtune.mode"))
    sections = [f"<h1>Study {html.escape(name)}</h1><p class='muted'>task {html.escape(tags.get('chemtune.task', '?'))}"
                f", {int((board['role'] == 'trial').sum()) if not board.empty else 0} trials, MLflow run {parent.info.run_id} (experiment {experiment_id}), "
                f"generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</p>"]
    if "chemtune.best_trial" in tags:
        sections.append(f"<p>Best {html.escape(metric)}: <b>{html.escape(format_value(parent.data.metrics.get('best_' + metric)))}"
                        f"</b>, trial {html.escape(tags['chemtune.best_trial'])}</p>")
    shown = board.drop(columns=[c for c in ("run_id", "model_uri", "status") if c in board.columns]) if not board.empty else board
    sections.append("<h2>Leaderboard</h2>" + _table(
        shown, f"sorted by {metric} ({'lower' if mode == 'min' else 'higher'} is better), complete trials first; "
        "a pruned trial was stopped early by ASHA and has no test scores"))
    baseline = client.search_runs([experiment_id], filter_string=(
        f"tags.`{PARENT_TAG}` = '{parent.info.run_id}' and tags.`{TAG_ROLE}` = 'baseline'"))
    if baseline:
        sections.append("<h2>Baseline</h2>" + _table(board[board["run_id"].isin([r.info.run_id for r in baseline])],
                                                     "baseline"))
    figures: list[tuple[str, Any]] = []
    if not board.empty and metric:
        curves = _learning_curves(client, board, metric)
        if curves is not None:
            figures.append(("learning_curves", curves))
    study = _load_optuna(name, optuna_url) if optuna_url else None
    if study is not None:
        figures.extend(optuna_plots(study).items())
        front = pareto_figure(study, board)  # Optuna's front plus the baselines as reference points
        if front is not None:
            figures = [(k, front if k == "pareto_front" else f) for k, f in figures]
    sections.append(_pareto_html(board))
    sections.append("<h2>Plots</h2>" + (_plots_html(figures) or "<p>no plots yet</p>"))
    try:
        reports = json.loads(Path(client.download_artifacts(parent.info.run_id, "data_report.json",
                                                            tempfile.mkdtemp())).read_text())
    except Exception:  # noqa: BLE001 - a study logged without one
        reports = []
    sections.append("<h2>Data</h2>" + _data_report_html(reports))
    hashes = pd.DataFrame([{"split": k.split(".", 1)[1], "hash": v} for k, v in sorted(tags.items())
                           if k.startswith("split_hash.")], columns=["split", "hash"])
    sections.append(_table(hashes, "split hashes (rows are comparable only on identical hashes)", "hashes"))
    page = _page(f"chemtune study {name}", "".join(sections))
    out.parent.mkdir(parents=True, exist_ok=True)
    from trainables.io import atomic_write_text

    atomic_write_text(out, page)
    return out


def refresh_study(name: str, tracking_uri: str, optuna_url: str | None, out: Path | None = None,
                  log_fn: Callable[[str], None] | None = None) -> Path:
    """Log the leaderboard (CSV and an MLflow table), Optuna's plots (HTML + PNG) and the report
    to the study's parent run; returns the report's local path (``out``, default a temp file)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    _, parent = study_run(client, name)
    run_id = parent.info.run_id
    board = leaderboard(name, tracking_uri)
    if not board.empty:
        client.log_text(run_id, board.to_csv(index=False), "leaderboard.csv")
        client.log_table(run_id, board.astype(object).where(board.notna(), None), "leaderboard.json")
        if board.attrs.get("objectives") and "pareto" in board:  # the front on the study run: a file and a tag
            front = board[board["pareto"]]
            client.log_text(run_id, front.to_csv(index=False), "pareto_front.csv")
            client.set_tag(run_id, "chemtune.pareto_front", ", ".join(front["trial"].astype(str))[:5000])
    with tempfile.TemporaryDirectory() as tmp:
        study = _load_optuna(name, optuna_url) if optuna_url else None
        if study is not None and study.trials:
            for path in _write_plots(study, Path(tmp) / "plots"):
                client.log_artifact(run_id, str(path), "plots")
        report = build_report(name, tracking_uri, optuna_url, out or Path(tmp) / "report.html")
        logged = Path(tmp) / "report.html"  # the run's artifact has one name, whatever the local file's
        if report != logged:
            shutil.copyfile(report, logged)
        client.log_artifact(run_id, str(logged))
        if out is None:
            out = Path(tempfile.mkdtemp()) / "report.html"
            shutil.copyfile(logged, out)
    if log_fn:
        log_fn(f"report: {out}")
    return out


def optuna_url_for(name: str, root: str | None = None) -> str:
    """The study's Optuna storage, as ``launch`` recorded it; else the embedded default."""
    paths = StudyPaths.default(root)
    state = paths.state_file(name)
    if state.exists():
        return json.loads(state.read_text()).get("optuna_url") or paths.optuna_url
    return paths.optuna_url
