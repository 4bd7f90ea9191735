"""The modules a retro treatment trains: the seq2seq model wrapper and its MLP adapters (torch, peft).

Which parts a treatment combines, and how they are checked, is :mod:`trainables.retro.treatments`; applying
one (:func:`apply_treatment`) needs these modules, so it lives here.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from peft import PeftModel
from torch import nn
from transformers import PreTrainedModel

from trainables.errors import StudyError
from trainables.retro.treatments import MLP_KINDS, TREATMENTS, parse_treatment

__all__ = ["Adapters", "Seq2SeqModel", "apply_treatment"]


def _paper_mlp(d_model: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, d_model), nn.GELU(),
                         nn.Linear(d_model, d_model))


def _bottleneck(d_model: int, dim: int) -> nn.Sequential:
    mlp = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, dim), nn.GELU(), nn.Linear(dim, d_model))
    nn.init.zeros_(mlp[-1].weight)  # the residual bottleneck starts as the identity
    nn.init.zeros_(mlp[-1].bias)
    return mlp


class Adapters(nn.Module):
    """MLPs attached to a seq2seq model with forward hooks.

    Args:
        d_model: Hidden size of the model.
        dim: Bottleneck width (``bottleneck`` kind only).
        where: Subset of ``{"mid", "end"}``.
        kind: ``"paper"`` (3-layer d x d GELU MLP replacing the hidden states) or ``"bottleneck"``
            (residual, zero-initialised, so the model starts out unchanged).
    """

    def __init__(self, d_model: int, dim: int, where: set[str], kind: str = "paper") -> None:
        super().__init__()
        if kind not in MLP_KINDS:
            raise StudyError(f"mlp_kind: {kind!r} is not one of {list(MLP_KINDS)}")
        self.d_model, self.dim, self.where, self.kind = d_model, dim, sorted(where), kind
        self.mlps = nn.ModuleDict({
            w: _paper_mlp(d_model) if kind == "paper" else _bottleneck(d_model, dim) for w in self.where
        })
        self._handles: list[Any] = []

    def _apply_mlp(self, where: str, hidden: torch.Tensor) -> torch.Tensor:
        out = self.mlps[where](hidden)
        return out if self.kind == "paper" else hidden + out

    def detach(self) -> None:
        """Remove the hooks (a deep copy of the model would otherwise carry copies of them)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def attach(self, model: PreTrainedModel) -> None:
        """Hook the MLPs into ``model``: ``mid`` after the encoder, ``end`` before the output projection."""
        self.detach()
        if "mid" in self.mlps:
            self._handles.append(model.get_encoder().register_forward_hook(self._mid))
        if "end" in self.mlps:
            self._handles.append(model.get_output_embeddings().register_forward_pre_hook(self._end))

    def _mid(self, module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (self._apply_mlp("mid", output[0]), *output[1:])
        output.last_hidden_state = self._apply_mlp("mid", output.last_hidden_state)
        return output

    def _end(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (self._apply_mlp("end", args[0]), *args[1:])

    def spec(self) -> dict[str, Any]:
        return {"d_model": self.d_model, "dim": self.dim, "where": self.where, "kind": self.kind}


class Seq2SeqModel(nn.Module):
    """A transformers seq2seq model (possibly PEFT-wrapped) and its adapters, trained as one module.

    Attributes:
        model: The (PEFT-wrapped) transformers model.
        adapters: :class:`Adapters` or ``None``.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        self.adapters: Adapters | None = None

    def forward(self, **batch: torch.Tensor) -> Any:
        return self.model(**batch)

    def generate(self, **kwargs: Any) -> torch.Tensor:
        return self.model.generate(**kwargs)

    def base(self) -> PreTrainedModel:
        """The transformers model under any PEFT wrapper."""
        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    def add_adapters(self, where: set[str], dim: int, kind: str = "paper") -> None:
        d_model = self.base().get_output_embeddings().in_features
        if self.adapters is not None:
            where = where | set(self.adapters.where)
        self.adapters = Adapters(d_model, dim, where, kind)
        self.adapters.attach(self.base())

    def export(self) -> tuple[PreTrainedModel, Adapters | None]:
        """A plain transformers model (LoRA merged into a copy) and the adapters, for serving."""
        if not isinstance(self.model, PeftModel):
            return self.model, self.adapters
        if self.adapters is not None:
            self.adapters.detach()
        merged = copy.deepcopy(self.model).merge_and_unload()
        if self.adapters is not None:
            self.adapters.attach(self.base())
        return merged, self.adapters


def apply_treatment(model: PreTrainedModel, name: str, config: dict[str, Any]) -> Seq2SeqModel:
    """Wrap ``model`` and apply the composition ``name``.

    Args:
        model: A transformers seq2seq model (every parameter starts trainable; fixed tables such as
            sinusoidal positions are buffers).
        name: Parts joined by ``+``.
        config: Trial config (``lora_rank``, ``lora_alpha``, ``lora_dropout``, ``mlp_kind``, ``adapter_dim``).

    Returns:
        The :class:`Seq2SeqModel` to train.
    """
    parts = parse_treatment(name)
    model.requires_grad_(True)
    wrapped = Seq2SeqModel(model)
    for part in sorted(parts, key=lambda a: TREATMENTS.get(a).order):
        TREATMENTS.get(part).apply(wrapped, config)
    return wrapped
