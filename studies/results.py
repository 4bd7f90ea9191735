"""A study's results as a user reads them: the leaderboard, and the winner in the model registry.

Imports MLflow and pandas only (no Ray, no torch), so ``chemtune leaderboard`` answers in seconds.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from studies.columns import COUNTS, format_value, is_test_metric, metric_direction, objectives, pareto_mask
from studies.names import check_name
from studies.store import PARENT_TAG, TAG_NUMBER, TAG_ROLE, TAG_STATE, TAG_STUDY, TAG_TRIAL
from trainables.metrics import COSTS

__all__ = ["leaderboard", "register_best", "study_run", "metric_direction", "is_test_metric", "format_value", "COUNTS",
           "objectives", "pareto_mask"]

log = logging.getLogger(__name__)
# How the table groups trials before sorting by the metric: only complete trials compete.
_STATE_ORDER = {"complete": 0, "pruned": 1, "running": 2, "failed": 3, "killed": 4}


def _error(message: str) -> Exception:
    # trainables' package import loads the tasks (torch): only when there is an error to raise.
    from trainables.errors import StudyError

    return StudyError(message)


def _client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri)


def study_run(client: Any, name: str) -> tuple[str, Any]:
    """The latest parent run of study ``name``: ``(experiment_id, run)``."""
    check_name("study", name)  # it goes into a filter string
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`{TAG_STUDY}` = '{name}' and tags.`{TAG_ROLE}` = 'study'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    if not runs:
        raise _error(f"no study named {name!r} in the tracking store {client.tracking_uri}")
    return runs[0].info.experiment_id, runs[0]


def _state(run: Any) -> str:
    status = run.info.status
    if status == "FINISHED":
        return run.data.tags.get(TAG_STATE, "complete")
    return {"RUNNING": "running", "FAILED": "failed", "KILLED": "killed"}.get(status, status.lower())


def leaderboard(name: str, tracking_uri: str, metric: str | None = None, top: int | None = None) -> pd.DataFrame:
    """Trials of the latest run of study ``name``: complete trials first, best first by ``metric``
    (default: the study's), then trials ASHA pruned, then failed ones.

    Columns: ``rank, trial`` (then ``pareto`` in a multi-objective study: whether the complete trial is on
    the front of its objectives), ``role`` (``trial``, or a ``baseline`` / ``ensemble`` row beside them),
    ``state, epochs``, the valid then test scores, the costs (``trainables.metrics.COSTS``), ``wall_s, note``
    (why a score is missing), then ``optuna_trial, run_id, status`` (MLflow's) and ``model_uri``.
    ``metric`` may be any score or cost (``--sort``). ``frame.attrs`` holds ``metric`` and ``mode`` (what the
    table is sorted by) and, for a multi-objective study, ``objectives``.
    """
    client = _client(tracking_uri)
    experiment_id, parent = study_run(client, name)
    tags = parent.data.tags
    metric = metric or tags["chemtune.metric"]
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    rows = []
    for run in runs:
        m, t = run.data.metrics, run.data.tags
        state = _state(run)
        epochs = m.get("epoch")
        role = t.get(TAG_ROLE, "trial")
        if role != "trial":  # a peer baseline or an ensemble beside the trials: baseline:random_forest, ensemble:top3
            name = f"{role}:{t.get('chemtune.' + role, '')}"
        else:  # chemtune names its trial runs (tNN ...); a run from before that is known by its Tune id
            name = run.info.run_name if TAG_NUMBER in t else t.get(TAG_TRIAL, run.info.run_name)
        row: dict[str, Any] = {"trial": name, "role": role, "state": state,
                               "epochs": None if epochs is None else int(epochs)}
        row.update({k: v for k, v in m.items() if k.startswith(("valid_", "test_"))})
        row["trainable_params"] = None if m.get("trainable_params") is None else int(m["trainable_params"])
        row.update({c: m.get(c) for c in COSTS if c != "trainable_params"})
        row["wall_s"] = round(((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000, 1)
        row["note"] = {
            "pruned": f"stopped by ASHA after epoch {row['epochs']}: no test evaluation",
            "failed": "failed: see the run's error file",
            "running": "still running", "killed": "killed before it finished",
        }.get(state, "")
        row["optuna_trial"] = int(t[TAG_NUMBER]) if t.get(TAG_NUMBER, "").isdigit() else None
        row["run_id"], row["status"] = run.info.run_id, run.info.status
        row["model_uri"] = t.get("chemtune.model_uri")
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    scores = sorted(c for c in frame.columns if c.startswith("valid_")) + sorted(
        c for c in frame.columns if c.startswith("test_"))
    if metric not in scores and metric not in COSTS:
        if not metric.startswith(("valid_", "test_")):
            hint = [s for s in scores if s.split("_", 1)[1] == metric]
            raise _error(f"metric {metric!r} was not logged; choose from {', '.join(scores) or '(none yet)'}"
                         f" or a cost ({', '.join(COSTS)})"
                             + (f" (did you mean {hint[0]}?)" if hint else ""))
        frame[metric] = float("nan")  # no trial reported it yet (all failed, say)
        scores.append(metric)
    mode = metric_direction(metric, tags)
    first = ["trial", "role", "state", "epochs"]
    last = [*COSTS, "wall_s", "note", "optuna_trial", "run_id", "status", "model_uri"]
    frame = frame[first + scores + last]
    goals = objectives(tags)
    if goals:  # the Pareto front of the complete trials, marked after the trial's name
        trials = frame[(frame["role"] == "trial") & (frame["state"] == "complete")]
        modes = [metric_direction(g, tags) for g in goals]
        front = pareto_mask(trials, goals, modes) if not trials.empty and set(goals) <= set(frame.columns) else []
        frame.insert(frame.columns.get_loc("trial") + 1, "pareto", False)
        frame.loc[trials.index[list(front)] if len(front) else [], "pareto"] = True
    order = frame["state"].map(lambda s: _STATE_ORDER.get(s, 5))
    value = frame[metric] if mode == "min" else -frame[metric]
    frame = frame.assign(_o=order, _v=value).sort_values(["_o", "_v"], na_position="last", kind="stable")
    frame = frame.drop(columns=["_o", "_v"]).reset_index(drop=True)
    frame.insert(0, "rank", range(1, len(frame) + 1))
    frame.attrs.update(metric=metric, mode=mode, **({"objectives": goals} if goals else {}))
    return frame.head(top) if top else frame


def _description(name: str, row: pd.Series, metric: str, parent: Any) -> str:
    scores = ", ".join(f"{k}={format_value(row[k])}" for k in row.index
                       if k.startswith(("valid_", "test_")) and format_value(row[k]))
    hashes = ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in sorted(parent.data.tags.items())
                       if k.startswith("split_hash."))
    return (f"chemtune study {name!r}, trial {row['trial']} (Optuna trial {row['optuna_trial']}, "
            f"MLflow run {row['run_id']}), selected by {metric}. Scores: {scores}. Split hashes: {hashes}.")


def register_best(name: str, model_name: str, tracking_uri: str, alias: str | None = "champion",
                  metric: str | None = None, force: bool = False, rule: str = "best") -> Any:
    """Register the complete trial ``rule`` picks (default: the best) of study ``name``; set ``alias`` on it.

    ``rule``: ``best``, ``cheapest-within:DELTA`` or ``knee`` (``studies.choose``); it is recorded on the
    version (tags ``chemtune.rule``, ``chemtune.rule_reason``) and in its model card (``studies.card``).
    A trial already registered under ``model_name`` is refused unless ``force`` (a second version
    of the same weights only hides which one is meant). Selecting on a test metric is allowed but
    logged as a warning: test is for reporting, not for choosing.
    """
    import mlflow

    from studies.choose import candidates, choose, parse_rule
    from studies.store import tracking_uri_scope

    check_name("model", model_name)  # before anything is written to the registry
    chosen_by = parse_rule(rule)
    board = leaderboard(name, tracking_uri, metric)
    metric = board.attrs.get("metric", metric)
    if metric and is_test_metric(metric):
        log.warning("selecting on %s: the test split then no longer estimates the chosen model's error", metric)
    if candidates(board).empty:
        raise _error(f"study {name!r} has no complete trial with a logged model")
    client = _client(tracking_uri)
    _, parent = study_run(client, name)
    best, reason = choose(board, chosen_by, parent.data.tags)
    if not force:
        for version in client.search_model_versions(f"name = '{model_name}'"):
            if version.run_id == best["run_id"] or version.tags.get("chemtune.run_id") == best["run_id"]:
                raise _error(
                    f"trial {best['trial']} of study {name!r} is already version {version.version} of "
                    f"{model_name!r}; pass --force to register it again")
    tags = {TAG_STUDY: name, TAG_TRIAL: str(best["trial"]), "chemtune.run_id": str(best["run_id"]),
            TAG_NUMBER: str(best["optuna_trial"]), "chemtune.metric": str(metric),
            "chemtune.rule": str(chosen_by), "chemtune.rule_reason": reason[:5000]}
    tags.update({k: v for k, v in parent.data.tags.items() if k.startswith("split_hash.")})
    tags.update({k: format_value(best[k]) for k in best.index if k.startswith(("valid_", "test_")) and format_value(best[k])})
    with tracking_uri_scope(tracking_uri):
        version = mlflow.register_model(best["model_uri"], model_name, tags=tags)
    _card(client, model_name, version, best, parent, _description(name, best, metric, parent),
          f"rule `{chosen_by}`: {reason}")
    if client.get_registered_model(model_name).description in (None, ""):
        client.update_registered_model(model_name, description=f"chemtune models from study {name!r}")
    if alias:
        _set_alias(client, model_name, alias, version.version)
    return version


def _card(client: Any, model_name: str, version: Any, row: pd.Series, parent: Any, source: str,
          selection: str) -> None:
    """The registered trial's model card (``studies.card``): description of the version and an artifact."""
    from mlflow.models import get_model_info

    from studies.card import attach_card, model_card
    from studies.store import tracking_uri_scope

    run = client.get_run(row["run_id"])
    with tracking_uri_scope(client.tracking_uri):
        signature = get_model_info(row["model_uri"]).signature
    study_params = parent.data.params
    seed = run.data.params.get("seed", study_params.get("seed", ""))
    card = model_card(model_name=model_name, version=version.version, study=parent.data.tags.get(TAG_STUDY, ""),
                      task=parent.data.tags.get("chemtune.task", ""), source=source, selection=selection,
                      study_params=study_params, study_tags=parent.data.tags, config=run.data.params,
                      metrics=run.data.metrics, seeds=[seed] if seed != "" else [], signature=signature,
                      extra={k: int(v) for k, v in run.data.metrics.items() if k in ("epoch", "best_epoch")})
    attach_card(client, model_name, version.version, row["run_id"], card)


def _set_alias(client: Any, model_name: str, alias: str, version: str, attempts: int = 5) -> None:
    """Point ``alias`` at ``version``; two registrations racing may both try to insert the alias row
    (a UNIQUE-constraint error for the loser), so the loser retries and then updates it."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            client.set_registered_model_alias(model_name, alias, version)
            return
        except MlflowException as err:
            if ("UNIQUE constraint" not in str(err) and "IntegrityError" not in str(err)) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
