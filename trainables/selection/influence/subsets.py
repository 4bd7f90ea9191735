"""Which parameters of a regression model influence is taken over, and the model as a function of them.

The head (scored on frozen pooled embeddings, cheap), its output layer, what the fine-tuning method
trains in the encoder (PEFT adapters, BitFit biases), or the last N encoder layers, each with the head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.func import functional_call

from trainables.batching import model_device, pad_batch
from trainables.errors import StudyError
from trainables.models.regression import masked_mean
from trainables.selection.knobs import SUBSETS, Subset

if TYPE_CHECKING:
    from trainables.models.regression import RegressionModel
    from trainables.selection.knobs import InfluenceKnobs

__all__ = ["FlatModule", "PackedRegression", "Subset", "SUBSETS", "encoder_layers", "check_packed"]


class FlatModule:
    """A module as ``predict(theta, x) -> [B]`` over a flat vector of some of its parameters.

    ``names`` picks the parameters in ``theta`` (default: all); the others stay as they are in the
    module (``functional_call`` fills in what the dict leaves out).
    """

    def __init__(self, module: nn.Module, names: Sequence[str] | None = None) -> None:
        self.module = module.requires_grad_(False)
        params = dict(module.named_parameters())
        self.names = list(params) if names is None else list(names)
        self.shapes = [params[n].shape for n in self.names]
        self.sizes = [params[n].numel() for n in self.names]
        self.theta = torch.cat([params[n].detach().float().reshape(-1) for n in self.names])

    def __call__(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        params = {n: t.view(s) for n, t, s in zip(self.names, theta.split(self.sizes), self.shapes)}
        return functional_call(self.module, params, (x,)).reshape(len(x))


class PackedRegression(nn.Module):
    """A :class:`RegressionModel` on packed inputs ``x`` [B, 2, T] (token ids; attention mask).

    The encoder gets a 4D additive mask: from a 2D mask, transformers' mask code branches on the
    data (``.all()``), which ``vmap`` cannot trace. One tensor per sample keeps ``predict(theta, x)``.
    """

    def __init__(self, model: "RegressionModel") -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = x[:, 0], x[:, 1]
        additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        hidden = self.model.backbone(input_ids=ids, attention_mask=additive).last_hidden_state
        if self.model.config.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            pooled = masked_mean(hidden, mask)
        return self.model.head(pooled.float()).squeeze(-1)

    @staticmethod
    def pack(ids: list[list[int]], pad_id: int) -> torch.Tensor:
        """Token-id sequences as one padded tensor [N, 2, T]."""
        return torch.stack(pad_batch(ids, pad_id), dim=1)

    @staticmethod
    def trim(x: torch.Tensor) -> torch.Tensor:
        """Drop the padding columns that no row of this batch needs (right padding)."""
        return x[..., : int(x[:, 1].sum(1).max())]


@torch.no_grad()
def check_packed(model: "RegressionModel", ids: list[list[int]], pad_id: int, subset: str) -> None:
    """Fail clearly if the encoder does not take :class:`PackedRegression`'s 4D mask (remote code may not)."""
    device, was_training = model_device(model), model.training
    input_ids, mask = pad_batch(ids, pad_id)
    why = ""
    try:
        # The class's forward, not the instance's: Accelerate wraps a prepared model's forward in its autocast
        # (bf16 under resources.precision), while PackedRegression runs the encoder as is (fp32).
        expected = type(model).forward(model.eval(), input_ids.to(device), mask.to(device))
        got = PackedRegression(model)(PackedRegression.pack(ids, pad_id).to(device))
        if not torch.allclose(got, expected, rtol=1e-3, atol=1e-4):
            why = f"its predictions differ by up to {float((got - expected).abs().max()):.3g}"
    except Exception as err:  # noqa: BLE001 - any failure here means the same thing
        why = f"{type(err).__name__}: {err}"
    finally:
        model.train(was_training)
    if why:
        raise StudyError(f"influence_params {subset!r} runs the encoder with a 4D additive attention mask, which "
                         f"this encoder does not take ({why}); use 'head' or 'head_out'")


def _head(model: "RegressionModel", knobs: "InfluenceKnobs") -> list[str]:
    return [n for n, _ in model.named_parameters() if n.startswith("head.")]


def _head_out(model: "RegressionModel", knobs: "InfluenceKnobs") -> list[str]:
    last = f"head.{len(model.head) - 1}."
    return [n for n, _ in model.named_parameters() if n.startswith(last)]


def _peft(model: "RegressionModel", knobs: "InfluenceKnobs") -> list[str]:
    # what the optimiser moves in the encoder: adapters (LoRA, IA3), biases (BitFit); everything for 'full'
    # or a base_model_uri model (adapters merged), which is correct but slow
    return [f"backbone.{n}" for n, p in model.backbone.named_parameters() if p.requires_grad] + _head(model, knobs)


def encoder_layers(backbone: nn.Module) -> tuple[str, nn.ModuleList]:
    """The backbone's stack of transformer blocks: its longest ``nn.ModuleList`` (``encoder.layer`` in BERT)."""
    lists = [(n, m) for n, m in backbone.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise StudyError("influence_params 'last_layers': the encoder has no list of layers")
    return max(lists, key=lambda item: len(item[1]))


def _last_layers(model: "RegressionModel", knobs: "InfluenceKnobs") -> list[str]:
    prefix, layers = encoder_layers(model.backbone)
    n = knobs.influence_layers
    if n > len(layers):
        raise StudyError(f"influence_layers {n} is more than the encoder's {len(layers)} layers")
    starts = tuple(f"backbone.{prefix}.{i}." for i in range(len(layers) - n, len(layers)))
    # every weight of those layers, whatever the method trains (PEFT wrappers keep the base weights there too)
    return [name for name, _ in model.named_parameters() if name.startswith(starts)] + _head(model, knobs)


# The registry and its declared entries live with the influence knobs (trainables.selection.knobs).
SUBSETS.register("head", Subset(_head, encoder=False), help="the whole regression head (MLP)")
SUBSETS.register("head_out", Subset(_head_out, encoder=False),
                 help="the head's output layer only (small enough for the exact solver)")
SUBSETS.register("peft", Subset(_peft, encoder=True),
                 help="what the method trains in the encoder (LoRA / IA3 adapters, BitFit biases; all for 'full') + the head")
SUBSETS.register("last_layers", Subset(_last_layers, encoder=True),
                 help="the last influence_layers encoder layers + the head")
