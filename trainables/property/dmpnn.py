"""The ``dmpnn`` property model: chemprop's D-MPNN trained by chemtune's trial contract.

A property trial whose config says ``arch: dmpnn`` comes here instead of the language-model
trainer: same reporter, same per-epoch metric names, same checkpoint layout (``state.pt`` to
resume, ``model/`` to serve, prediction CSVs), so Optuna, ASHA, MLflow and the registry treat it
like any other trial and one study can mix LMs and D-MPNNs.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from trainables.base import Reporter, restore_training_state
from trainables.checkpoints import seal_checkpoint
from trainables.faults import check_finite
from trainables.io import atomic_write_json
from trainables.models.chemprop_api import import_chemprop
from trainables.models.dmpnn import DmpnnConfig, DmpnnKnobs, build_mpnn, molecule_dataset, place_batch, predict_mpnn
from trainables.property.data import PropertyData, regression_metrics
from trainables.serving import row_errors

if TYPE_CHECKING:
    from trainables.spec import TrialSpec

__all__ = ["DmpnnTrainer", "train_dmpnn", "DmpnnPredictor", "DMPNN_DEFAULTS"]

# The declared knobs (chemprop train's defaults; dmpnn_lr is chemprop's max_lr).
DMPNN_DEFAULTS: dict[str, Any] = DmpnnKnobs.defaults()


class _Plain:
    """What ``restore_training_state`` asks of an accelerator, for a model trained without one."""

    @staticmethod
    def unwrap_model(model: Any) -> Any:
        return model


class DmpnnTrainer:
    """One D-MPNN configuration: chemprop's model and Noam-like schedule, chemtune's epoch loop."""

    def __init__(self, config: dict[str, Any], data: PropertyData, spec: "TrialSpec") -> None:
        self.cp = import_chemprop("arch: dmpnn")
        self.config = {**DMPNN_DEFAULTS, **config}
        self.spec, self.data, self.seed = spec, data, spec.seed
        torch.manual_seed(self.seed)
        np.random.seed(self.seed)
        self.arch = DmpnnConfig.from_config(self.config)
        y = data.train.targets
        self.mean, self.std = float(y.mean()), float(y.std()) or 1.0
        self.sets = {s: molecule_dataset(getattr(data, s).smiles, getattr(data, s).targets, self.mean, self.std)
                     for s in ("train", "valid", "test")}
        # Not on EpochLoop (chemprop batches are graphs, not tensor dicts); its batches go to the model's device.
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = build_mpnn(self.arch, self.mean, self.std).to(self.device)
        self.n_trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def _optimizer(self, steps_per_pass: int, passes: int) -> tuple[torch.optim.Optimizer, Any]:
        """chemprop's Noam-like schedule over every pass of the trial (warmup counted in passes, as chemprop's
        epochs)."""
        max_lr = float(self.config["dmpnn_lr"])
        total = self.spec.max_epochs * passes
        warmup = min(int(self.config["dmpnn_warmup_epochs"]), max(total - 1, 0))
        optimizer = torch.optim.Adam(self.model.parameters(), lr=max_lr / 10)
        scheduler = self.cp.schedulers.build_NoamLike_LRSched(
            optimizer, warmup * steps_per_pass, (total - warmup) * steps_per_pass,
            max_lr / 10, max_lr, max_lr / 10,
        )
        return optimizer, scheduler

    def fit(self, reporter: Reporter) -> dict[str, float]:
        """Train for ``spec.max_epochs`` (resuming from the reporter's checkpoint); report every epoch, each of
        ``dmpnn_passes_per_epoch`` passes over the train split."""
        batch_size = int(self.config["dmpnn_batch_size"])
        passes = int(self.config["dmpnn_passes_per_epoch"])
        optimizer, scheduler = self._optimizer(math.ceil(len(self.data.train) / batch_size), passes)
        state = restore_training_state(reporter, _Plain(), self.model, optimizer, scheduler)
        final: dict[str, float] = {}
        for epoch in range(state.get("epoch", 0), self.spec.max_epochs):
            tic = time.perf_counter()
            self.model.train()
            total, count = 0.0, 0
            for pass_ in range(epoch * passes, (epoch + 1) * passes):
                torch.manual_seed(self.seed * 1000 + pass_)  # the pass's shuffle, reproducible on resume
                loader = self.cp.data.build_dataloader(self.sets["train"], batch_size=batch_size, num_workers=0,
                                                       seed=self.seed * 1000 + pass_)
                for step, batch in enumerate(loader):
                    bmg, v_d, x_d, y = place_batch(batch, self.device)
                    z = self.model.fingerprint(bmg, v_d, x_d)
                    loss = torch.nn.functional.mse_loss(self.model.predictor.train_step(z), y)
                    check_finite(float(loss.detach()), epoch + 1, step)  # before backward: NaN never reaches the weights
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    total += float(loss.detach()) * len(batch.Y)
                    count += len(batch.Y)
            seconds = time.perf_counter() - tic
            valid_pred = predict_mpnn(self.model, self.sets["valid"])
            metrics: dict[str, Any] = {
                "epoch": epoch + 1, "train_loss": total / max(count, 1), "n_train_rows": len(self.data.train),
                "samples_per_s": count / seconds, "trainable_params": self.n_trainable,
                "total_params": self.n_trainable,
                **{f"valid_{k}": v for k, v in regression_metrics(self.data.valid.targets, valid_pred).items()},
            }
            with tempfile.TemporaryDirectory(prefix="chemtune-ckpt-") as tmp:
                ckpt = Path(tmp)
                if epoch + 1 == self.spec.max_epochs:  # test once, after the search metric is final
                    test_pred = predict_mpnn(self.model, self.sets["test"])
                    metrics.update({f"test_{k}": v for k, v in regression_metrics(self.data.test.targets, test_pred).items()})
                    _write_predictions(ckpt / "test_predictions.csv", self.data.test, test_pred)
                _write_predictions(ckpt / "valid_predictions.csv", self.data.valid, valid_pred)
                torch.save({"model": self.model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "epoch": epoch + 1}, ckpt / "state.pt")
                self.export(ckpt / "model")
                atomic_write_json(ckpt / "metrics.json", metrics)
                seal_checkpoint(ckpt)  # last: an unsealed checkpoint is never resumed from
                reporter.report(metrics, ckpt)
            final = metrics
        return final

    def export(self, path: Path) -> None:
        """``model/``: ``dmpnn.json`` (architecture + train statistics) and ``dmpnn.pt`` (weights)."""
        path.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.cpu() for k, v in self.model.state_dict().items()}, path / "dmpnn.pt")
        (path / "dmpnn.json").write_text(json.dumps({**self.arch.to_dict(), "target_mean": self.mean,
                                                     "target_std": self.std}))


def _write_predictions(path: Path, table: Any, pred: np.ndarray) -> None:
    pd.DataFrame({"id": table.ids, "smiles": table.smiles, "target": table.targets, "prediction": pred}).to_csv(
        path, index=False
    )


def train_dmpnn(config: dict[str, Any], data: PropertyData, spec: "TrialSpec", reporter: Reporter) -> dict[str, float]:
    """The ``arch: dmpnn`` branch of the property task's plain core."""
    return DmpnnTrainer(config, data, spec).fit(reporter)


class DmpnnPredictor:
    """Serves a ``model/`` folder written by :meth:`DmpnnTrainer.export` (same columns as the LM predictor)."""

    def __init__(self, model: Any) -> None:
        self.model = model.eval()

    @staticmethod
    def is_dmpnn(path: str | Path) -> bool:
        return (Path(path) / "dmpnn.json").is_file()

    @classmethod
    def load(cls, path: str | Path) -> "DmpnnPredictor":
        path = Path(path)
        meta = json.loads((path / "dmpnn.json").read_text())
        mean, std = meta.pop("target_mean"), meta.pop("target_std")
        model = build_mpnn(DmpnnConfig(**meta), mean, std)
        model.load_state_dict(torch.load(path / "dmpnn.pt", map_location="cpu"))
        return cls(model)

    def predict(self, smiles: list[str]) -> pd.DataFrame:
        """Columns ``smiles, canonical_smiles, prediction, error``; invalid SMILES get NaN and a reason."""
        from trainables.data.chem import canonicalize

        canonical = [canonicalize(s) if isinstance(s, str) else None for s in smiles]
        ok = [i for i, c in enumerate(canonical) if c is not None]
        pred = np.full(len(smiles), np.nan)
        if ok:
            pred[ok] = predict_mpnn(self.model, molecule_dataset([canonical[i] for i in ok], None))
        return pd.DataFrame({"smiles": list(smiles), "canonical_smiles": canonical, "prediction": pred,
                             "error": row_errors(canonical)})
