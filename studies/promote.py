"""``chemtune promote STUDY``: refit the chosen configuration on train + valid, score test once, register it.

A trial's model saw only the train split: valid chose its epoch and its configuration. Once both are chosen,
valid's rows are worth more as training data. The refit trains the chosen trial's configuration on train +
valid for the epoch count that trial found best (its ``best_epoch``), with S seeds (S > 1: the refits are
served as one ensemble, ``trainables.property.ensemble``), and scores test once, after its last epoch (the epoch loop
looks at test only then; ``TrialSpec.refit`` keeps the last epoch's weights, since valid cannot choose).
The refit is a run of the study (``chemtune.role=refit``) beside its trials, and the registered version
carries its model card (``studies.card``).

Property studies only: a retro refit would need the seq2seq data merged the same way (not built yet).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import yaml
from mlflow.tracking import MlflowClient

from studies.choose import choose, parse_rule
from studies.names import check_name
from studies.results import leaderboard, study_run
from studies.store import PARENT_TAG, TAG_ROLE, TAG_STUDY, tracking_uri_scope
from trainables.errors import StudyError
from trainables.metrics import COSTS

__all__ = ["promote", "merge_train_valid", "trial_config", "refit_seeds"]


def _typed(value: str) -> Any:
    """A config value as MLflow stored it (``str(value)``) back to its type: ``0.001``, ``True``, ``lora``."""
    if value == "None":
        return None
    for number in (int, float):  # before YAML, which reads "1e-05" (Python's str of 1e-5) as a string
        try:
            return number(value)
        except ValueError:
            pass
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def trial_config(params: dict[str, str]) -> dict[str, Any]:
    """The trial's configuration from its run's parameters (each logged as ``str(value)``)."""
    return {k: _typed(v) for k, v in params.items()}


def merge_train_valid(payload: Any) -> Any:
    """The property payload with valid's molecules appended to train (valid itself is kept, now in-sample)."""
    from trainables.data.tables import MoleculeTable

    train, valid = getattr(payload, "train", None), getattr(payload, "valid", None)
    if not (dataclasses.is_dataclass(payload) and isinstance(train, MoleculeTable) and isinstance(valid, MoleculeTable)):
        raise StudyError("promote: only property studies can be refit on train + valid for now")
    merged = MoleculeTable(train.smiles + valid.smiles, np.concatenate([train.targets, valid.targets]),
                           train.ids + valid.ids, train.rows + valid.rows)
    return dataclasses.replace(payload, train=merged)


def refit_seeds(seed: int, count: int) -> list[int]:
    """The seeds of ``count`` refits: the trial's own seed first, then the next ones."""
    if count < 1:
        raise StudyError(f"--seeds {count}: give 1 or more")
    return [seed + i for i in range(count)]


def _study_spec(client: MlflowClient, parent: Any) -> Any:
    from studies.spec import parse_study

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(client.download_artifacts(parent.info.run_id, "study.yaml", tmp))
        return parse_study(yaml.safe_load(path.read_text()), f"study {parent.data.tags.get(TAG_STUDY)}: study.yaml")


def _check_split(prepared_tags: dict[str, str], parent_tags: dict[str, str]) -> None:
    for key, value in prepared_tags.items():
        if key.startswith("split_hash.") and parent_tags.get(key) not in (None, value):
            raise StudyError(f"promote: the {key.split('.', 1)[1]} split differs from the study's ({key} "
                             f"{value} != {parent_tags[key]}): the data changed since the study ran")


def _log_model(run_id: str, tracking_uri: str, folders: list[Path], task: Any) -> str:
    """One refit: the task's pyfunc; several: the ensemble pyfunc over their ``model/`` folders."""
    from trainables.property.ensemble import EnsemblePyfunc

    if len(folders) == 1:
        python_model = task.pyfunc()
        artifacts = {"model": str(folders[0])}
        signature = python_model.model_signature(folders[0])
    else:
        python_model = EnsemblePyfunc()
        artifacts = {f"member{i}": str(f) for i, f in enumerate(folders)}
        signature = task.pyfunc().model_signature(folders[0])  # same input column; outputs add uncertainty
    with tracking_uri_scope(tracking_uri), mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=python_model, artifacts=artifacts,
                                       pip_requirements=list(task.pip_requirements), signature=signature)
    return info.model_uri


def _summary(finals: list[dict[str, Any]], folders: list[Path]) -> dict[str, float]:
    """Test metrics of the registered model (one refit's own, or the ensemble's mean prediction) and its costs.

    No valid_* scores: the refit trained on valid's rows, so they are in-sample and would rank the refit
    above every trial on the leaderboard; the card quotes the chosen trial's valid scores instead.
    """
    from studies.ensemble import ensemble_metrics

    if len(finals) == 1:
        out = {k: float(v) for k, v in finals[0].items() if k.startswith("test_")}
    else:
        metrics, _ = ensemble_metrics([pd.read_csv(f.parent / "test_predictions.csv") for f in folders])
        out = {f"test_{k}": v for k, v in metrics.items()}
    # costs of the shipped model: all refits' training, their parameters together, their predictions in turn
    for cost in COSTS:
        values = [float(f[cost]) for f in finals if isinstance(f.get(cost), (int, float))]
        if values:
            out[cost] = max(values) if cost == "peak_memory_mb" else float(sum(values))
    return out


def promote(name: str, model_name: str, tracking_uri: str, *, rule: str = "best", seeds: int = 1,
            alias: str | None = "champion", metric: str | None = None) -> Any:
    """Refit the trial ``rule`` picks from study ``name`` on train + valid with ``seeds`` seeds, score test
    once, log the refit as a run of the study and register it as ``model_name`` (with its model card)."""
    from studies.card import attach_card, model_card
    from studies.runner import prepare
    from trainables import TASKS, NullReporter

    check_name("model", model_name)
    chosen_by = parse_rule(rule)
    client = MlflowClient(tracking_uri)
    experiment_id, parent = study_run(client, name)
    board = leaderboard(name, tracking_uri, metric)
    row, reason = choose(board, chosen_by, parent.data.tags)
    trial = client.get_run(row["run_id"])
    epochs = int(trial.data.metrics.get("best_epoch") or trial.data.metrics.get("epoch") or 0)
    if epochs < 1:
        raise StudyError(f"trial {row['trial']} of study {name!r} logged no best_epoch: cannot size its refit")
    spec = _study_spec(client, parent)
    if spec.task != "property":  # before the data is read: merge_train_valid knows property payloads only
        raise StudyError(f"promote: study {name!r} is a {spec.task} study; only property studies can be refit "
                         "on train + valid for now (register --rule ships a trial as trained)")
    task = TASKS.get(spec.task)
    config = trial_config(trial.data.params)
    prepared = prepare(spec, tracking_uri)
    _check_split(prepared.tags, parent.data.tags)
    payload = merge_train_valid(prepared.payload)
    seed_list = refit_seeds(spec.seed, seeds)
    run = client.create_run(experiment_id, run_name=f"refit {row['trial']} x{len(seed_list)}", tags={
        PARENT_TAG: parent.info.run_id, TAG_ROLE: "refit", "chemtune.refit": f"seeds{len(seed_list)}",
        TAG_STUDY: name, "chemtune.task": spec.task, "chemtune.refit_of": str(row["run_id"]),
        "chemtune.method": trial.data.tags.get("chemtune.method", ""),
        **{k: v for k, v in parent.data.tags.items() if k.startswith("split_hash.")}})
    run_id = run.info.run_id
    try:
        for key, value in {**trial.data.params, "refit_epochs": epochs, "refit_seeds": seed_list,
                           "refit_rows": len(payload.train)}.items():
            client.log_param(run_id, key, str(value)[:500])
        with tempfile.TemporaryDirectory(prefix="chemtune-refit-") as tmp:
            finals, folders = [], []
            for seed in seed_list:
                trial_spec = spec.model_copy(update={"max_epochs": epochs, "seed": seed}).trial_spec()
                trial_spec = trial_spec.model_copy(update={"refit": True})
                keep = Path(tmp) / f"seed{seed}"
                with tracking_uri_scope(tracking_uri):
                    finals.append(task.train(dict(config), payload, trial_spec, NullReporter(keep_dir=keep)))
                folders.append(keep / "model")
            metrics = _summary(finals, folders)
            for key, value in metrics.items():
                if math.isfinite(value):
                    client.log_metric(run_id, key, value)
            for i, seed in enumerate(seed_list):  # each refit's own test score beside the shipped one
                for key, value in finals[i].items():
                    if str(key).startswith("test_") and isinstance(value, (int, float)):
                        client.log_metric(run_id, f"seed{seed}_{key}", float(value))
            model_uri = _log_model(run_id, tracking_uri, folders, task)
        client.set_tag(run_id, "chemtune.model_uri", model_uri)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    with tracking_uri_scope(tracking_uri):
        version = mlflow.register_model(model_uri, model_name, tags={
            TAG_STUDY: name, "chemtune.run_id": run_id, "chemtune.refit_of": str(row["run_id"]),
            "chemtune.rule": str(chosen_by), "chemtune.rule_reason": reason[:5000],
            "chemtune.seeds": ",".join(map(str, seed_list)), "chemtune.refit_epochs": str(epochs)})
        signature = mlflow.models.get_model_info(model_uri).signature
    card = model_card(
        model_name=model_name, version=version.version, study=name, task=spec.task,
        source=(f"refit of trial {row['trial']} (run {row['run_id']}) on train + valid, {len(seed_list)} seed(s)"
                + (", served as the mean of the refits (uncertainty: their spread)" if len(seed_list) > 1 else "")
                + f"; run {run_id}"),
        selection=f"rule `{chosen_by}`: {reason}", study_params=parent.data.params, study_tags=parent.data.tags,
        config=trial.data.params, seeds=seed_list, signature=signature,
        metrics={**{k: v for k, v in trial.data.metrics.items() if k.startswith("valid_")}, **metrics},
        extra={"epochs (the trial's best epoch)": epochs, "rows trained (train + valid)": len(payload.train),
               "valid_* scores": "the chosen trial's, before the refit (the refit trained on valid's rows)",
               "test_* scores": ("the ensemble of the refits'" if len(seed_list) > 1 else "the refit's")
               + ", scored once after training"})
    attach_card(client, model_name, version.version, run_id, card)
    if alias:
        from studies.results import _set_alias

        _set_alias(client, model_name, alias, version.version)
    return version
