"""chemprop's D-MPNN, built through chemprop's Python API with the knobs chemtune searches.

One builder serves both the ``chemprop`` baseline (chemprop's own defaults, trained by Lightning
as ``chemprop train`` does) and the ``dmpnn`` property model (trained by chemtune's loop).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from trainables.knobs import KnobSet, Search
from trainables.models.chemprop_api import import_chemprop

__all__ = ["DmpnnConfig", "DmpnnKnobs", "build_mpnn", "molecule_dataset", "predict_mpnn", "AGGREGATIONS"]

AGGREGATIONS = ("mean", "sum", "norm")


class DmpnnKnobs(KnobSet):
    """The D-MPNN trial's knobs (``dmpnn_*`` keys of the trial config); defaults are ``chemprop train``'s (2.3.1)."""

    dmpnn_depth: Annotated[int, Search(2, 6)] = Field(3, ge=1, description="message-passing steps")
    dmpnn_hidden_size: Annotated[int, Search(choices=(200, 300, 600, 900))] = Field(
        300, ge=1, description="message hidden size")
    dmpnn_dropout: Annotated[float, Search(0.0, 0.4)] = Field(
        0.0, ge=0, lt=1, description="dropout in message passing and the FFN")
    dmpnn_ffn_num_layers: Annotated[int, Search(1, 3)] = Field(1, ge=1, description="FFN layers")
    dmpnn_ffn_hidden_size: Annotated[int, Search(choices=(300, 600, 1200))] = Field(
        300, ge=1, description="FFN width")
    dmpnn_aggregation: Annotated[Literal["mean", "sum", "norm"], Search(choices=AGGREGATIONS)] = Field(
        "norm", description="atoms -> molecule")
    dmpnn_lr: Annotated[float, Search(1e-4, 3e-3, log=True)] = Field(
        1e-3, gt=0, description="peak learning rate of the Noam-like schedule")
    dmpnn_batch_size: Annotated[int, Search(choices=(32, 64))] = Field(64, ge=1, description="molecules per step")
    dmpnn_warmup_epochs: int = Field(2, ge=0, description="passes over the train split of linear learning-rate "
                                     "warmup (chemprop's epochs)")
    dmpnn_passes_per_epoch: int = Field(
        1, ge=1, le=50, description="passes over the train split per reported epoch: a mixed study has one "
        "max_epochs for every trial, and a D-MPNN pass costs a small share of a language model's epoch, so "
        "12 epochs x 4 passes give it chemprop's ~50 in the same schedule")


@dataclass(frozen=True)
class DmpnnConfig:
    """Architecture knobs; the defaults are ``chemprop train``'s (2.3.1)."""

    depth: int = 3
    hidden_size: int = 300
    dropout: float = 0.0
    ffn_num_layers: int = 1
    ffn_hidden_size: int = 300
    aggregation: str = "norm"
    aggregation_norm: float = 100.0
    batch_norm: bool = False

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "DmpnnConfig":
        """The ``dmpnn_*`` keys of a trial config (missing keys keep chemprop's defaults)."""
        known = {f: config[f"dmpnn_{f}"] for f in cls.__dataclass_fields__ if f"dmpnn_{f}" in config}
        out = cls(**known)
        if out.aggregation not in AGGREGATIONS:
            raise ValueError(f"dmpnn_aggregation {out.aggregation!r}: choose one of {AGGREGATIONS}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def molecule_dataset(smiles: list[str], targets: np.ndarray | None, mean: float = 0.0, std: float = 1.0) -> Any:
    """A chemprop ``MoleculeDataset`` with chemprop's default (v2) featurizer.

    Targets are standardized with the train statistics (``mean``, ``std``): chemprop trains and
    validates in that space and un-scales only in eval-mode ``forward``.
    """
    cp = import_chemprop("the dmpnn model")
    ys = (targets - mean) / (std or 1.0) if targets is not None else np.zeros(len(smiles))
    points = [cp.data.MoleculeDatapoint.from_smi(s, [float(y)]) for s, y in zip(smiles, ys)]
    return cp.data.MoleculeDataset(points, cp.featurizers.SimpleMoleculeMolGraphFeaturizer())


def build_mpnn(cfg: DmpnnConfig, target_mean: float, target_std: float, *, warmup_epochs: int = 2,
               init_lr: float = 1e-4, max_lr: float = 1e-3, final_lr: float = 1e-4) -> Any:
    """A chemprop ``MPNN`` predicting in label units (targets are standardized inside, as chemprop does)."""
    cp = import_chemprop("the dmpnn model")
    nn = cp.nn
    mp = nn.BondMessagePassing(d_h=cfg.hidden_size, depth=cfg.depth, dropout=cfg.dropout)
    agg = {"mean": nn.MeanAggregation, "sum": nn.SumAggregation}.get(cfg.aggregation)
    agg = agg() if agg else nn.NormAggregation(norm=cfg.aggregation_norm)
    scaler = _Scaler(target_mean, target_std)
    ffn = nn.RegressionFFN(
        input_dim=mp.output_dim, hidden_dim=cfg.ffn_hidden_size, n_layers=cfg.ffn_num_layers, dropout=cfg.dropout,
        output_transform=nn.UnscaleTransform.from_standard_scaler(scaler),
    )
    return cp.models.MPNN(
        mp, agg, ffn, batch_norm=cfg.batch_norm, metrics=[nn.metrics.MSE()],
        warmup_epochs=warmup_epochs, init_lr=init_lr, max_lr=max_lr, final_lr=final_lr,
    )


def place_batch(batch: Any, device: Any) -> tuple[Any, Any, Any, Any]:
    """``(bmg, V_d, X_d, Y)`` of a chemprop training batch on ``device`` (the model's)."""
    from trainables.batching import to_device

    bmg = batch.bmg
    bmg.to(device)  # chemprop's BatchMolGraph moves its tensors in place
    return bmg, to_device(batch.V_d, device), to_device(batch.X_d, device), to_device(batch.Y, device)


def predict_mpnn(model: Any, dataset: Any, batch_size: int = 256) -> np.ndarray:
    """Eval-mode predictions in label units, in the dataset's order."""
    import torch

    cp = import_chemprop("the dmpnn model")
    loader = cp.data.build_dataloader(dataset, batch_size=batch_size, num_workers=0, shuffle=False)
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for batch in loader:
            bmg, v_d, x_d, _ = place_batch(batch, device)
            out.append(model(bmg, v_d, x_d).squeeze(-1).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


class _Scaler:
    """The two attributes ``UnscaleTransform.from_standard_scaler`` reads (train statistics only)."""

    def __init__(self, mean: float, std: float) -> None:
        self.mean_ = np.array([mean])
        self.scale_ = np.array([std or 1.0])
