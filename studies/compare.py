"""``chemtune compare STUDY --paper NAME [--tuned STUDY2]``: a study's results in a paper table's layout,
beside the report's published numbers (``studies/papers/published.yaml``).

Each row of the table is a value of the paper's ``key`` parameter (a treatment, a gamma, a method).
Among a study's finished trials with that value, the one best on the paper's ``select_on`` valid
metric is taken and its test metrics are reported: chosen on valid, reported on test. Per metric the
columns are: ``paper`` (the report's figure), ``as published`` (STUDY, the report's settings),
``tuned`` (STUDY2, chemtune's own protocol, when given) and ``diff`` (as published - paper). The
table is printed and logged on STUDY's MLflow run (``compare/<paper>.csv`` and ``.md``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from trainables.errors import StudyError

__all__ = ["PUBLISHED", "load_papers", "compare_table", "compare"]

PUBLISHED = Path(__file__).parent / "papers" / "published.yaml"


def load_papers(path: Path = PUBLISHED) -> dict[str, dict[str, Any]]:
    """The published tables by name."""
    return yaml.safe_load(path.read_text())


def _same(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b), abs_tol=1e-9)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _best(trials: pd.DataFrame, key: str, value: Any, select: str, mode: str) -> tuple[int, pd.Series | None]:
    """How many finished trials ran the row ``key == value``, and the one best on ``select``."""
    mine = trials[[_same(v, value) for v in trials.get(key, pd.Series([], dtype=object))]] if len(trials) else trials
    mine = mine.dropna(subset=[select]) if select in mine.columns else mine.iloc[0:0]
    return len(mine), (mine.sort_values(select, ascending=(mode == "min")).iloc[0] if len(mine) else None)


def _metric(best: pd.Series | None, metric: str) -> float | None:
    value = None if best is None or metric not in best.index else best[metric]
    return None if value is None or pd.isna(value) else float(value)


def compare_table(trials: pd.DataFrame, paper: dict[str, Any], mode: str,
                  tuned: tuple[pd.DataFrame, str] | None = None, costs: tuple[str, ...] = ()) -> pd.DataFrame:
    """The paper's rows: published figures, the study's valid-selected test figures, their difference.

    Args:
        trials: One row per finished trial of the as-published study: the ``key`` parameter's value,
            valid and test metrics (and costs).
        paper: One entry of ``published.yaml``.
        mode: ``min`` or ``max`` for ``paper["select_on"]``.
        tuned: The tuned study's trials and mode, for the ``tuned`` column.
        costs: Costs (``trainables.metrics.COSTS``) of each row's selected trial to show beside its scores
            (``chemtune compare --costs``): accuracy against what it took.
    """
    key, select = paper["key"], paper["select_on"]
    out = []
    for row in paper["rows"]:
        count, best = _best(trials, key, row["key"], select, mode)
        entry: dict[str, Any] = {"row": row["label"] + ("" if row.get("in_report", True) else " (not in report)"),
                                 key: row["key"], "trials": count,
                                 select: None if best is None else float(best[select])}
        tuned_best = None if tuned is None else _best(tuned[0], key, row["key"], select, tuned[1])[1]
        for metric in paper["metrics"]:
            published = (row.get("published") or {}).get(metric)
            mine = _metric(best, metric)
            entry[f"{metric} paper"] = published
            entry[f"{metric} as published"] = mine
            if tuned is not None:
                entry[f"{metric} tuned"] = _metric(tuned_best, metric)
            entry[f"{metric} diff"] = None if published is None or mine is None else mine - float(published)
        for cost in costs:
            entry[cost] = _metric(best, cost)
        out.append(entry)
    return pd.DataFrame(out)


def _trials(name: str, tracking_uri: str, key: str) -> tuple[pd.DataFrame, str, str]:
    """Finished trials of the study's latest run with the ``key`` param; the parent run id; its mode."""
    from mlflow.tracking import MlflowClient

    from studies.results import study_run
    from studies.store import PARENT_TAG, TAG_STATE

    client = MlflowClient(tracking_uri)
    experiment_id, parent = study_run(client, name)
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    rows = []
    for run in runs:  # complete trials only: a trial ASHA pruned has no test scores
        if run.info.status != "FINISHED" or run.data.tags.get(TAG_STATE, "complete") != "complete":
            continue
        rows.append({key: run.data.params.get(key), **run.data.metrics})
    return pd.DataFrame(rows), parent.info.run_id, parent.data.tags.get("chemtune.mode", "min")


def _markdown(table: pd.DataFrame, paper: dict[str, Any], study: str, tuned: str | None = None) -> str:
    cols = list(table.columns)
    fmt = lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    studies = f"`{study}` (as published)" + (f" and `{tuned}` (tuned)" if tuned else "")
    lines = [f"# {paper['title']}", "", f"Studies {studies}: per row, the trial best on `{paper['select_on']}` "
             "(valid); its test metrics are reported.", ""]
    if paper.get("source"):
        lines += [f"Published figures: {paper['source']}.", ""]
    if paper.get("tuned_on_test"):
        lines += ["**The paper selected its settings on the test set**; chemtune selects on valid.", ""]
    if paper.get("note"):
        lines += [f"Note: {paper['note']}", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def compare(study: str, paper_name: str, tracking_uri: str, papers: Path = PUBLISHED,
            tuned: str | None = None, costs: bool = False) -> tuple[pd.DataFrame, str]:
    """Build the table (``tuned``: a second study for the tuned column; ``costs``: every cost the trials
    logged, beside the scores), log it on the study's MLflow run; return it and its markdown."""
    from mlflow.tracking import MlflowClient

    from trainables.metrics import COSTS

    known = load_papers(papers)
    if paper_name not in known:
        raise StudyError(f"--paper {paper_name!r}: unknown; {papers} has {sorted(known)}")
    paper = known[paper_name]
    trials, parent_id, mode = _trials(study, tracking_uri, paper["key"])
    if paper["select_on"] not in trials.columns and len(trials):
        raise StudyError(f"study {study!r} logged no {paper['select_on']!r}; is it a study of this paper's task?")
    tuned_trials = None
    if tuned is not None:
        frame, _, tuned_mode = _trials(tuned, tracking_uri, paper["key"])
        tuned_trials = (frame, tuned_mode)
    chosen = tuple(c for c in COSTS if c in trials.columns) if costs else ()
    table = compare_table(trials, paper, mode, tuned_trials, chosen)
    text = _markdown(table, paper, study, tuned)
    client = MlflowClient(tracking_uri)
    client.log_text(parent_id, table.to_csv(index=False), f"compare/{paper_name}.csv")
    client.log_text(parent_id, text, f"compare/{paper_name}.md")
    return table, text
