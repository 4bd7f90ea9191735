"""Treatments: which parts of a seq2seq model train. Atoms combine with ``+`` (``freeze_encoder+adapter_end``).

Each atom acts on its own part and the rest trains as in ``full``:

- ``full``: every parameter trains (the base state; adds nothing).
- ``freeze_encoder`` / ``freeze_decoder``: the parameters of that stack are frozen. Token embeddings
  tied between the stacks (BART) belong to both, so freezing either stack freezes them.
- ``adapter_mid``: a residual bottleneck MLP on the encoder output, before cross-attention.
  ``adapter_end``: one on the decoder output, before the LM head. ``adapter_all``: both.
  Their last layer starts at zero, so the model starts out unchanged.
- ``lora_encoder`` / ``lora_decoder`` / ``lora_both``: that stack is frozen and LoRA (PEFT) trains on
  its attention output projections (self- and cross-attention).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from pydantic import Field
from torch import nn
from transformers import PreTrainedModel

from trainables.errors import StudyError
from trainables.knobs import KnobSet, Search
from trainables.registry import Registry

__all__ = [
    "TREATMENTS", "TREATMENT_CHOICES", "Seq2SeqModel", "Adapters", "parse_treatment", "apply_treatment",
    "attention_output_projections", "lora_treatments", "LoraTreatmentKnobs", "AdapterKnobs", "treatment_knobs",
]

# Leaf names of attention output projections: BART/T5/Llama-like, BERT (attention.output.dense).
_OUT_PROJ = re.compile(r"(\.out_proj|\.o_proj|\.o|attention\.output\.dense|\.c_proj)$")


@dataclass(frozen=True)
class Treatment:
    """A registered atom: ``apply(model, config)`` acts on a :class:`Seq2SeqModel` in place."""

    apply: Callable[["Seq2SeqModel", dict[str, Any]], None]
    order: int  # freezing first, then LoRA (wraps the model), then adapters
    knobs: type[KnobSet] | None = None  # the atom's own knobs (read from the trial config)


class LoraTreatmentKnobs(KnobSet):
    """Knobs of the ``lora_*`` treatments."""

    lora_rank: Annotated[int, Search(2, 64, log=True)] = Field(8, ge=1, description="LoRA rank")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA scaling alpha (default: twice the rank)")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA path")


class AdapterKnobs(KnobSet):
    """Knobs of the ``adapter_*`` treatments."""

    adapter_dim: int = Field(128, ge=1, description="bottleneck width of the MLP adapters")


TREATMENTS: Registry[Treatment] = Registry("treatment")


class Adapters(nn.Module):
    """Residual bottleneck MLPs attached to a seq2seq model with forward hooks.

    Args:
        d_model: Hidden size of the model.
        dim: Bottleneck width.
        where: Subset of ``{"mid", "end"}``.
    """

    def __init__(self, d_model: int, dim: int, where: set[str]) -> None:
        super().__init__()
        self.d_model, self.dim, self.where = d_model, dim, sorted(where)
        self.mlps = nn.ModuleDict({w: self._mlp(d_model, dim) for w in self.where})
        self._handles: list[Any] = []

    @staticmethod
    def _mlp(d_model: int, dim: int) -> nn.Sequential:
        mlp = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, dim), nn.GELU(), nn.Linear(dim, d_model))
        nn.init.zeros_(mlp[-1].weight)
        nn.init.zeros_(mlp[-1].bias)
        return mlp

    def attach(self, model: PreTrainedModel) -> None:
        """Hook the MLPs into ``model``: ``mid`` after the encoder, ``end`` before the output embeddings."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if "mid" in self.mlps:
            self._handles.append(model.get_encoder().register_forward_hook(self._mid))
        if "end" in self.mlps:
            self._handles.append(model.get_output_embeddings().register_forward_pre_hook(self._end))

    def _mid(self, module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (output[0] + self.mlps["mid"](output[0]), *output[1:])
        output.last_hidden_state = output.last_hidden_state + self.mlps["mid"](output.last_hidden_state)
        return output

    def _end(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        hidden = args[0]
        return (hidden + self.mlps["end"](hidden), *args[1:])

    def spec(self) -> dict[str, Any]:
        return {"d_model": self.d_model, "dim": self.dim, "where": self.where}


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

    def add_adapters(self, where: set[str], dim: int) -> None:
        d_model = self.base().get_output_embeddings().in_features
        if self.adapters is not None:
            where = where | set(self.adapters.where)
        self.adapters = Adapters(d_model, dim, where)
        self.adapters.attach(self.base())

    def export(self) -> tuple[PreTrainedModel, Adapters | None]:
        """A plain transformers model (LoRA merged into a copy) and the adapters, for serving."""
        if isinstance(self.model, PeftModel):
            return copy.deepcopy(self.model).merge_and_unload(), self.adapters
        return self.model, self.adapters


def _stack_params(model: PreTrainedModel, stack: str) -> list[nn.Parameter]:
    part = model.get_encoder() if stack == "encoder" else model.get_decoder()
    params = list(part.parameters())
    if stack == "decoder":  # the LM head belongs to the decoder
        params += list(model.get_output_embeddings().parameters())
    return params


def attention_output_projections(model: PreTrainedModel, stack: str) -> list[str]:
    """Full module names of the attention output projections (nn.Linear) in ``stack``.

    Args:
        model: A transformers seq2seq model.
        stack: ``"encoder"`` or ``"decoder"``.
    """
    part = model.get_encoder() if stack == "encoder" else model.get_decoder()
    inside = {id(m) for m in part.modules()}
    names = [n for n, m in model.named_modules()
             if id(m) in inside and isinstance(m, nn.Linear) and _OUT_PROJ.search(n)]
    if not names:
        raise ValueError(f"no attention output projections found in the {stack} of {type(model).__name__}")
    return names


def _freeze(stack: str) -> Callable[[Seq2SeqModel, dict[str, Any]], None]:
    def apply(m: Seq2SeqModel, config: dict[str, Any]) -> None:
        for p in _stack_params(m.base(), stack):
            p.requires_grad_(False)

    return apply


def _lora(stacks: tuple[str, ...]) -> Callable[[Seq2SeqModel, dict[str, Any]], None]:
    def apply(m: Seq2SeqModel, config: dict[str, Any]) -> None:
        base = m.base()
        trainable = {n for n, p in base.named_parameters() if p.requires_grad}
        targets = [name for s in stacks for name in attention_output_projections(base, s)]
        knobs = LoraTreatmentKnobs.from_config(config)
        lora = LoraConfig(
            r=knobs.lora_rank, lora_alpha=knobs.lora_alpha or 2 * knobs.lora_rank,
            lora_dropout=knobs.lora_dropout, target_modules=targets, bias="none",
        )
        m.model = get_peft_model(base, lora)  # freezes every base parameter ...
        frozen = {id(p) for s in stacks for p in _stack_params(base, s)}
        for name, p in base.named_parameters():  # ... so give back what the treatment does not freeze
            if name in trainable and id(p) not in frozen:
                p.requires_grad_(True)

    return apply


def _adapter(where: set[str]) -> Callable[[Seq2SeqModel, dict[str, Any]], None]:
    def apply(m: Seq2SeqModel, config: dict[str, Any]) -> None:
        m.add_adapters(where, AdapterKnobs.from_config(config).adapter_dim)

    return apply


TREATMENTS.register("full", Treatment(lambda m, c: None, 0), help="every parameter trains")
TREATMENTS.register("freeze_encoder", Treatment(_freeze("encoder"), 0), help="encoder frozen")
TREATMENTS.register("freeze_decoder", Treatment(_freeze("decoder"), 0), help="decoder and LM head frozen")
TREATMENTS.register("lora_encoder", Treatment(_lora(("encoder",)), 1, LoraTreatmentKnobs), help="LoRA on encoder attention outputs")
TREATMENTS.register("lora_decoder", Treatment(_lora(("decoder",)), 1, LoraTreatmentKnobs), help="LoRA on decoder attention outputs")
TREATMENTS.register("lora_both", Treatment(_lora(("encoder", "decoder")), 1, LoraTreatmentKnobs), help="LoRA on all attention outputs")
TREATMENTS.register("adapter_mid", Treatment(_adapter({"mid"}), 2, AdapterKnobs), help="MLP adapter between encoder and decoder")
TREATMENTS.register("adapter_end", Treatment(_adapter({"end"}), 2, AdapterKnobs), help="MLP adapter before the LM head")
TREATMENTS.register("adapter_all", Treatment(_adapter({"mid", "end"}), 2, AdapterKnobs), help="both MLP adapters")

# The combinations the ``retro`` search space offers (any other ``+`` combination is valid too).
TREATMENT_CHOICES: tuple[str, ...] = (
    "full", "freeze_encoder", "freeze_decoder",
    "adapter_mid", "adapter_end", "adapter_all",
    "freeze_encoder+freeze_decoder+adapter_all",
    "lora_encoder", "lora_decoder", "lora_both",
    "lora_both+adapter_all", "freeze_encoder+lora_decoder",
)


def parse_treatment(name: str) -> list[str]:
    """Atoms of a combination, validated; raise :class:`StudyError` naming unknown or repeated atoms."""
    atoms = [a.strip() for a in str(name).split("+")]
    for atom in atoms:
        if atom not in TREATMENTS:
            raise StudyError(f"treatment {name!r}: unknown part {atom!r}; combine with '+' from {TREATMENTS.names()}")
    if len(set(atoms)) != len(atoms):
        raise StudyError(f"treatment {name!r}: a part is repeated")
    if sum(a.startswith("lora_") for a in atoms) > 1:
        raise StudyError(f"treatment {name!r}: use one of lora_encoder, lora_decoder, lora_both")
    return atoms


def treatment_knobs(name: str) -> list[type[KnobSet]]:
    """The knob models of a combination's atoms (each once)."""
    found = [TREATMENTS.get(a).knobs for a in parse_treatment(name)]
    return [k for i, k in enumerate(found) if k is not None and k not in found[:i]]


def lora_treatments() -> list[str]:
    """The search-space choices that use LoRA (LoRA's rank applies only to them)."""
    return [t for t in TREATMENT_CHOICES if any(a.startswith("lora_") for a in parse_treatment(t))]


def apply_treatment(model: PreTrainedModel, name: str, config: dict[str, Any]) -> Seq2SeqModel:
    """Wrap ``model`` and apply the treatment combination ``name``.

    Args:
        model: A transformers seq2seq model (all parameters trainable).
        name: Atoms joined by ``+``.
        config: Trial config (``lora_rank``, ``lora_alpha``, ``lora_dropout``, ``adapter_dim``).

    Returns:
        The :class:`Seq2SeqModel` to train.
    """
    atoms = parse_treatment(name)
    model.requires_grad_(True)
    wrapped = Seq2SeqModel(model)
    for atom in sorted(atoms, key=lambda a: TREATMENTS.get(a).order):
        TREATMENTS.get(atom).apply(wrapped, config)
    return wrapped
