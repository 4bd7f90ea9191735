"""Regression on top of an encoder: masked mean pooling, an MLP head, standardized targets."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainables.batching import pad_batch  # noqa: F401  (re-exported: its home is batching)

__all__ = ["HeadConfig", "FeatureTable", "RegressionModel", "masked_mean", "pad_batch"]


@dataclass
class HeadConfig:
    """Head shape and the train-split target statistics used to standardize labels."""

    hidden_size: int
    head_hidden: int = 256
    head_dropout: float = 0.1
    target_mean: float = 0.0
    target_std: float = 1.0
    pooling: str = "mean"  # "mean" over tokens, or "cls": the first token's hidden state
    n_features: int = 0  # molecular features concatenated with the pooled embedding (hybrid head); 0: none

    @property
    def input_size(self) -> int:
        """Width of what the head reads: the pooled embedding and the molecular features."""
        return self.hidden_size + self.n_features

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> "HeadConfig":
        return cls(**json.loads(path.read_text()))


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` [B, T, H] over the positions where ``mask`` [B, T] is 1."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class FeatureTable:
    """Molecular feature rows of the molecules a hybrid model has been shown, keyed by their token ids.

    The id-only paths (selectors' MC dropout and embeddings, predictions on a split) call the model
    with token ids alone; the trainer and the served predictor register each molecule's ids with its
    features here, and the model finds them by the unpadded ids of each row.
    """

    def __init__(self) -> None:
        self._rows: dict[tuple[int, ...], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, ids: list[list[int]], features: np.ndarray) -> None:
        if len(ids) != len(features):
            raise ValueError(f"{len(ids)} id sequences but {len(features)} feature rows")
        self._rows.update((tuple(x), row) for x, row in zip(ids, features))

    def lookup(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Feature rows [B, F] (float32, on the ids' device) of a padded batch."""
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            key = tuple(i for i, m in zip(ids, mask) if m)
            if key not in self._rows:
                raise KeyError(f"hybrid head: no molecular features registered for token ids {list(key)[:12]}...; "
                               "pass features= or register the molecule (FeatureTable.add)")
            rows.append(self._rows[key])
        return torch.as_tensor(np.stack(rows), dtype=torch.float32, device=input_ids.device)


class RegressionModel(nn.Module):
    """Encoder + masked mean pooling (+ molecular features: a hybrid head) + MLP; predicts standardized targets."""

    def __init__(self, backbone: nn.Module, head: HeadConfig) -> None:
        super().__init__()
        if head.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling {head.pooling!r}: choose mean or cls")
        self.backbone = backbone
        self.config = head
        self.features = FeatureTable()  # a hybrid head's rows for id-only calls (empty for a plain head)
        self.head = nn.Sequential(
            nn.Dropout(head.head_dropout),
            nn.Linear(head.input_size, head.head_hidden),
            nn.GELU(),
            nn.Dropout(head.head_dropout),
            nn.Linear(head.head_hidden, 1),
        )

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              features: torch.Tensor | None = None) -> torch.Tensor:
        """What the head reads [B, H + F]: the pooled molecule embedding, then (hybrid head) the molecular
        features, given or looked up in :attr:`features` by token ids."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        if self.config.pooling == "cls":
            pooled = out.last_hidden_state[:, 0]
        else:
            pooled = masked_mean(out.last_hidden_state, attention_mask)
        return self.with_features(pooled, input_ids, attention_mask, features)

    def with_features(self, pooled: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      features: torch.Tensor | None = None) -> torch.Tensor:
        """``pooled`` [B, H] with the molecular features appended (a plain head: ``pooled`` as is)."""
        if not self.config.n_features:
            return pooled
        if features is None:
            features = self.features.lookup(input_ids, attention_mask)
        return torch.cat([pooled.float(), features.to(pooled.device, torch.float32)], dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                features: torch.Tensor | None = None) -> torch.Tensor:
        z = self.embed(input_ids, attention_mask, features).float()
        # The head in fp32 under any autocast: a bf16 prediction would be off by up to ~0.4% of its value.
        with torch.autocast(z.device.type, enabled=False):
            return self.head(z).squeeze(-1)

    def standardize(self, y: np.ndarray | torch.Tensor):
        return (y - self.config.target_mean) / self.config.target_std

    def unstandardize(self, z: np.ndarray | torch.Tensor):
        return z * self.config.target_std + self.config.target_mean
