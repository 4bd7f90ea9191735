"""``chemtune register STUDY --top N``: one registered pyfunc over the study's top-N trials, any family.

Members (language models, D-MPNNs, mixed) are weighted by a least-squares fit on the simplex of their
*valid* predictions to the valid targets (:func:`trainables.property.ensemble.fit_weights`); the test
predictions are read only after the weights are fixed, to score the ensemble once. The ensemble is also
a run of the study (``chemtune.role=ensemble``) with valid/test metrics of the weighted predictions,
computed from the members' own prediction files on the identical split, so the leaderboard shows it
beside the trials and baselines; the weights are logged on the run and tagged on the registered version.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from studies.results import leaderboard, study_run
from studies.store import PARENT_TAG, TAG_ROLE, TAG_STUDY, tracking_uri_scope
from trainables.errors import StudyError

__all__ = ["register_ensemble", "ensemble_metrics", "ensemble_weights"]

def _model_folder(root: Path) -> Path:
    """The saved ``model/`` folder inside a downloaded chemtune pyfunc (LM or D-MPNN)."""
    for marker in ("dmpnn.json", "head.json"):
        found = sorted(root.rglob(marker))
        if found:
            return found[0].parent
    raise StudyError(f"{root}: not a chemtune property model (no head.json or dmpnn.json)")


def _aligned(frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, np.ndarray]:
    """Member 0's ``id, smiles, target`` and every member's predictions [M, N] in its row order."""
    base = frames[0][["id", "smiles", "target"]]
    preds = []
    for i, f in enumerate(frames):
        merged = base.merge(f[["id", "prediction"]], on="id", how="left", validate="one_to_one")
        if merged["prediction"].isna().any() or len(f) != len(base):
            raise StudyError(f"ensemble member {i}: its predictions cover other molecules than member 0's (split differs)")
        preds.append(merged["prediction"].to_numpy(dtype=float))
    return base, np.stack(preds)


def ensemble_weights(valid_frames: list[pd.DataFrame]) -> np.ndarray:
    """Member weights fitted on the members' valid prediction tables (and only those)."""
    from trainables.property.ensemble import fit_weights

    base, stack = _aligned(valid_frames)
    return fit_weights(stack, base["target"].to_numpy(dtype=float))


def ensemble_metrics(frames: list[pd.DataFrame], weights: np.ndarray | None = None) -> tuple[dict[str, float], pd.DataFrame]:
    """Metrics of the weighted mean prediction (equal weights by default) of members' prediction tables
    (joined on ``id``; rows must agree), with the weighted spread as ``uncertainty``."""
    from trainables.property.data import regression_metrics
    from trainables.property.ensemble import weighted_mean_spread

    base, stack = _aligned(frames)
    mean, spread = weighted_mean_spread(stack, weights)
    out = base.assign(prediction=mean, uncertainty=spread)
    return regression_metrics(out["target"].to_numpy(), out["prediction"].to_numpy()), out


def _card(client: MlflowClient, model_name: str, version: str, run_id: str, name: str, parent: Any,
          members: pd.DataFrame, metrics: dict[str, float], weights: np.ndarray) -> None:
    """The ensemble version's model card (``studies.card``): its members, their configurations and seeds."""
    from studies.card import attach_card, model_card

    runs = [client.get_run(r) for r in members["run_id"]]
    config = {f"member{i}.{k}": v for i, run in enumerate(runs) for k, v in sorted(run.data.params.items())}
    seeds = [run.data.params.get("seed", parent.data.params.get("seed", "")) for run in runs]
    card = model_card(
        model_name=model_name, version=version, study=name, task="property",
        source=f"the weighted mean of the top {len(runs)} trials ({', '.join(members['trial'].astype(str))}; weights "
               f"{', '.join(f'{w:.3f}' for w in weights)}, fitted on valid); run {run_id}",
        selection=f"top {len(runs)} complete trials by {parent.data.tags.get('chemtune.metric')}",
        study_params=parent.data.params, study_tags=parent.data.tags, config=config,
        metrics={**metrics, **{c: float(members[c].sum()) for c in ("trainable_params",) if c in members}},
        seeds=[s for s in seeds if s != ""])
    attach_card(client, model_name, version, run_id, card)


def register_ensemble(name: str, model_name: str, tracking_uri: str, top: int, alias: str | None = "champion",
                      metric: str | None = None) -> Any:
    """Combine the top-``top`` complete trials (by ``metric``, default the study's; any model family) into one
    registered model version, weighted by a fit on valid. Only complete trials compete: a pruned trial's score
    is from an earlier epoch and it has no test predictions."""
    import json

    from trainables.property.ensemble import WEIGHTS_FILE, EnsemblePyfunc

    board = leaderboard(name, tracking_uri, metric)
    ok = board[(board["role"] == "trial") & (board["state"] == "complete") & board["model_uri"].notna()
               & board.get("test_rmse", pd.Series(np.nan, index=board.index)).notna()] if not board.empty else board
    if len(ok) < top:
        raise StudyError(f"study {name!r} has {len(ok)} complete trial(s) with a model and test predictions; "
                         f"--top {top} needs {top}")
    members = ok.head(top)
    client = MlflowClient(tracking_uri)
    experiment_id, parent = study_run(client, name)
    with tempfile.TemporaryDirectory(prefix="chemtune-ensemble-") as tmp:
        folders, tables = {}, {"valid": [], "test": []}
        for i, (_, row) in enumerate(members.iterrows()):
            with tracking_uri_scope(tracking_uri):  # models:/m-... resolves through the fluent client's store
                root = Path(mlflow.artifacts.download_artifacts(row["model_uri"], dst_path=f"{tmp}/m{i}"))
            folders[f"member{i}"] = str(_model_folder(root))

        def predictions(split: str) -> list[pd.DataFrame]:
            return [pd.read_csv(client.download_artifacts(run_id, f"{split}_predictions.csv", f"{tmp}/m{i}"))
                    for i, run_id in enumerate(members["run_id"])]

        weights = ensemble_weights(predictions("valid"))  # fixed before any test prediction is read
        for split in tables:
            tables[split] = predictions(split)
        metrics = {}
        for split, frames in tables.items():
            m, _ = ensemble_metrics(frames, weights)
            metrics.update({f"{split}_{k}": v for k, v in m.items()})
        weights_path = Path(tmp, WEIGHTS_FILE)
        weights_path.write_text(json.dumps(weights.tolist()))
        folders["weights"] = str(weights_path)
        member_tags = [client.get_run(run_id).data.tags for run_id in members["run_id"]]
        split_tags = {k: v for k, v in member_tags[0].items() if k.startswith("split_hash.")}
        run = client.create_run(experiment_id, run_name=f"ensemble-top{top}", tags={
            PARENT_TAG: parent.info.run_id, TAG_ROLE: "ensemble", "chemtune.ensemble": f"top{top}", TAG_STUDY: name,
            "chemtune.method": "+".join(t.get("chemtune.method", "") for t in member_tags),
            "chemtune.task": "property", **split_tags})
        run_id = run.info.run_id
        try:
            client.log_param(run_id, "members", ",".join(members["run_id"]))
            client.log_param(run_id, "weights", ",".join(f"{w:.6g}" for w in weights))
            client.log_param(run_id, "weights_fit", "least squares on the simplex, valid split")
            for key, value in metrics.items():
                client.log_metric(run_id, key, value)
            with tracking_uri_scope(tracking_uri), mlflow.start_run(run_id=run_id):
                info = mlflow.pyfunc.log_model(name="model", python_model=EnsemblePyfunc(), artifacts=folders,
                                               pip_requirements=["chemtune", "torch", "transformers", "rdkit", "pandas"]
                                               + (["chemprop==2.3.1"] if any(Path(f, "dmpnn.json").is_file()
                                                                             for f in folders.values()) else []))
            client.set_tag(run_id, "chemtune.model_uri", info.model_uri)
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
    with tracking_uri_scope(tracking_uri):
        version = mlflow.register_model(info.model_uri, model_name, tags={
            TAG_STUDY: name, "chemtune.ensemble": f"top{top}", "chemtune.ensemble.weights": json.dumps(
                {run: round(float(w), 6) for run, w in zip(members["run_id"], weights)}),
            "chemtune.ensemble.weights_fit": "valid"})
    _card(client, model_name, version.version, run_id, name, parent, members, metrics, weights)
    if alias:
        client.set_registered_model_alias(model_name, alias, version.version)
    return version
