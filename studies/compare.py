"""``chemtune compare STUDY --paper NAME``: a study's results in a paper table's layout, beside the
paper's published numbers (``studies/papers/published.yaml``).

Each row of the table is a value of the paper's ``key`` parameter (a treatment, a gamma, a method).
Among the study's finished trials with that value, the one best on the paper's ``select_on`` valid
metric is taken and its test metrics are reported: chosen on valid, reported on test. The table is
printed and logged on the study's MLflow run (``compare/<paper>.csv`` and ``.md``).
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


def compare_table(trials: pd.DataFrame, paper: dict[str, Any], mode: str, costs: tuple[str, ...] = ()) -> pd.DataFrame:
    """The paper's rows with the published numbers and the study's valid-selected test numbers.

    Args:
        trials: One row per finished trial: the ``key`` parameter's value, valid and test metrics (and costs).
        paper: One entry of ``published.yaml``.
        mode: ``min`` or ``max`` for ``paper["select_on"]``.
        costs: Costs (``trainables.metrics.COSTS``) of each row's selected trial to show beside its scores
            (``chemtune compare --costs``): accuracy against what it took.
    """
    key, select = paper["key"], paper["select_on"]
    out = []
    for row in paper["rows"]:
        mine = trials[[_same(v, row["key"]) for v in trials.get(key, pd.Series([], dtype=object))]] if len(trials) else trials
        mine = mine.dropna(subset=[select]) if select in mine.columns else mine.iloc[0:0]
        best = mine.sort_values(select, ascending=(mode == "min")).iloc[0] if len(mine) else None
        entry: dict[str, Any] = {"row": row["label"], key: row["key"], "trials": len(mine),
                                 select: None if best is None else float(best[select])}
        for metric in paper["metrics"]:
            published = (row.get("published") or {}).get(metric)
            entry[f"{metric} paper"] = published
            value = None if best is None or metric not in best.index else best[metric]
            entry[f"{metric} chemtune"] = None if value is None or pd.isna(value) else float(value)
        for cost in costs:
            value = None if best is None or cost not in best.index else best[cost]
            entry[cost] = None if value is None or pd.isna(value) else float(value)
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


def _markdown(table: pd.DataFrame, paper: dict[str, Any], study: str) -> str:
    cols = list(table.columns)
    fmt = lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = [f"# {paper['title']}", "", f"Study `{study}`: per row, the trial best on `{paper['select_on']}` "
             "(valid); its test metrics are reported.", ""]
    if paper.get("tuned_on_test"):
        lines += ["**The paper selected its settings on the test set**; chemtune selects on valid.", ""]
    if paper.get("note"):
        lines += [f"Note: {paper['note']}", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def compare(study: str, paper_name: str, tracking_uri: str, papers: Path = PUBLISHED,
            costs: bool = False) -> tuple[pd.DataFrame, str]:
    """Build the table (with ``costs``: every cost the trials logged, beside the scores), log it on the
    study's MLflow run; return it and its markdown."""
    from trainables.metrics import COSTS

    from mlflow.tracking import MlflowClient

    known = load_papers(papers)
    if paper_name not in known:
        raise StudyError(f"--paper {paper_name!r}: unknown; {papers} has {sorted(known)}")
    paper = known[paper_name]
    trials, parent_id, mode = _trials(study, tracking_uri, paper["key"])
    if paper["select_on"] not in trials.columns and len(trials):
        raise StudyError(f"study {study!r} logged no {paper['select_on']!r}; is it a study of this paper's task?")
    table = compare_table(trials, paper, mode, tuple(c for c in COSTS if c in trials.columns) if costs else ())
    text = _markdown(table, paper, study)
    client = MlflowClient(tracking_uri)
    client.log_text(parent_id, table.to_csv(index=False), f"compare/{paper_name}.csv")
    client.log_text(parent_id, text, f"compare/{paper_name}.md")
    return table, text
