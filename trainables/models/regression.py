"""Regression on top of an encoder: masked mean pooling, an MLP head, standardized targets."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainables.batching import pad_batch  # noqa: F401  (re-exported: its home is batching)

__all__ = ["HeadConfig", "RegressionModel", "masked_mean", "pad_batch"]


@dataclass
class HeadConfig:
    """Head shape and the train-split target statistics used to standardize labels."""

    hidden_size: int
    head_hidden: int = 256
    head_dropout: float = 0.1
    target_mean: float = 0.0
    target_std: float = 1.0
    pooling: str = "mean"  # "mean" over tokens, or "cls": the first token's hidden state

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> "HeadConfig":
        return cls(**json.loads(path.read_text()))


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` [B, T, H] over the positions where ``mask`` [B, T] is 1."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class RegressionModel(nn.Module):
    """Encoder + masked mean pooling + MLP; predicts standardized targets."""

    def __init__(self, backbone: nn.Module, head: HeadConfig) -> None:
        super().__init__()
        if head.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling {head.pooling!r}: choose mean or cls")
        self.backbone = backbone
        self.config = head
        self.head = nn.Sequential(
            nn.Dropout(head.head_dropout),
            nn.Linear(head.hidden_size, head.head_hidden),
            nn.GELU(),
            nn.Dropout(head.head_dropout),
            nn.Linear(head.head_hidden, 1),
        )

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled molecule embeddings [B, H]."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        if self.config.pooling == "cls":
            return out.last_hidden_state[:, 0]
        return masked_mean(out.last_hidden_state, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids, attention_mask).float()).squeeze(-1)

    def standardize(self, y: np.ndarray | torch.Tensor):
        return (y - self.config.target_mean) / self.config.target_std

    def unstandardize(self, z: np.ndarray | torch.Tensor):
        return z * self.config.target_std + self.config.target_mean
