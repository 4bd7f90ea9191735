"""Treatments: which parts of a seq2seq model train, as validated compositions of parts joined by ``+``.

The parts follow the treatments of the Chemformer PEFT retrosynthesis study (tables 2 and 3):

- ``full``: every parameter trains (alone only).
- ``fix_encoder`` / ``fix_decoder``: that *layer stack* is frozen (its layers and the stack's final
  norm). The shared token embedding (and positions, when learned) and a separate output projection
  keep training, as in the paper; a BART whose LM head is tied to the embedding trains that one matrix.
- ``lora_encoder`` / ``lora_decoder`` / ``lora_all``: that stack is frozen and LoRA (PEFT) trains on
  its attention output projections (self- and cross-attention ``out_proj``) only.
- ``mlp_mid`` / ``mlp_end`` / ``mlp_all``: the paper's MLP (three ``d x d`` linear layers with GELU
  between them, no residual) on the encoder output (mid), on the decoder output before the output
  projection (end), or both. The config key ``mlp_kind: bottleneck`` swaps in the zero-initialised
  residual bottleneck ``LayerNorm -> d x adapter_dim -> GELU -> adapter_dim x d`` instead.

:func:`validate_treatment` is the one place a composition is checked and named canonically;
:data:`PAPER_TREATMENTS` lists the paper's 15 rows in that canonical spelling.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from pydantic import Field, field_validator
from torch import nn
from transformers import PreTrainedModel

from trainables.errors import StudyError
from trainables.knobs import KnobSet, Search
from trainables.registry import Registry

__all__ = [
    "TREATMENTS", "PAPER_TREATMENTS", "TREATMENT_CHOICES", "MLP_KINDS", "Seq2SeqModel", "Adapters",
    "validate_treatment", "parse_treatment", "apply_treatment", "attention_output_projections",
    "stack_parameters", "lora_treatments", "mlp_treatments", "all_treatments", "needs_pretrained",
    "LoraTreatmentKnobs", "AdapterKnobs", "treatment_knobs",
]

# Leaf names of attention output projections: BART/T5/Llama-like, BERT (attention.output.dense).
_OUT_PROJ = re.compile(r"(\.out_proj|\.o_proj|\.o|attention\.output\.dense|\.c_proj)$")
# Modules of a stack that are embeddings, not layers (they keep training when the stack is fixed).
_EMBEDDING = re.compile(r"(^|\.)(embed_tokens|embed_positions|embeddings|layernorm_embedding|shared|wte|wpe)$")
# Output heads inside a decoder module (BERT2BERT: ``cls``), which are not part of the layer stack.
_HEAD = re.compile(r"(^|\.)(lm_head|cls)$")

MLP_KINDS = ("paper", "bottleneck")


@dataclass(frozen=True)
class Treatment:
    """A registered part: ``apply(model, config)`` acts on a :class:`Seq2SeqModel` in place."""

    apply: Callable[["Seq2SeqModel", dict[str, Any]], None]
    order: int  # freezing first, then LoRA (wraps the model), then MLPs
    group: str  # at most one part per group ("fix" parts may appear once per stack)
    stacks: tuple[str, ...] = ()  # the layer stacks it freezes
    knobs: type[KnobSet] | None = None  # the part's own knobs (read from the trial config)


class LoraTreatmentKnobs(KnobSet):
    """Knobs of the ``lora_*`` parts."""

    lora_rank: Annotated[int, Search(2, 64, log=True)] = Field(8, ge=1, description="LoRA rank")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA scaling alpha (default: twice the rank)")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA path")


class AdapterKnobs(KnobSet):
    """Knobs of the ``mlp_*`` parts."""

    mlp_kind: Annotated[str, Search(choices=MLP_KINDS)] = Field(
        "paper", description="paper: 3-layer d x d GELU MLP (no residual); bottleneck: zero-initialised residual adapter")
    adapter_dim: int = Field(128, ge=1, description="bottleneck width of the 'bottleneck' MLP adapters")

    @field_validator("mlp_kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in MLP_KINDS:
            raise ValueError(f"choose one of {list(MLP_KINDS)}")
        return v


TREATMENTS: Registry[Treatment] = Registry("treatment")


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


def _part(model: PreTrainedModel, stack: str) -> nn.Module:
    return model.get_encoder() if stack == "encoder" else model.get_decoder()


def stack_parameters(model: PreTrainedModel, stack: str) -> list[nn.Parameter]:
    """The parameters of a layer stack: the encoder's/decoder's modules less embeddings and output heads."""
    part = _part(model, stack)
    outside: set[int] = {id(p) for p in model.get_output_embeddings().parameters()}
    outside |= {id(p) for p in model.get_input_embeddings().parameters()}
    for name, module in part.named_modules():
        if isinstance(module, nn.Embedding) or _EMBEDDING.search(name) or _HEAD.search(name):
            outside |= {id(p) for p in module.parameters()}
    return [p for p in part.parameters() if id(p) not in outside]


def attention_output_projections(model: PreTrainedModel, stack: str) -> list[str]:
    """Full module names of the attention output projections (nn.Linear) in ``stack``.

    Args:
        model: A transformers seq2seq model.
        stack: ``"encoder"`` or ``"decoder"``.
    """
    inside = {id(m) for m in _part(model, stack).modules()}
    names = [n for n, m in model.named_modules()
             if id(m) in inside and isinstance(m, nn.Linear) and _OUT_PROJ.search(n)]
    if not names:
        raise StudyError(f"no attention output projections found in the {stack} of {type(model).__name__}; "
                         "LoRA cannot be placed")
    return names


def _fix(stack: str) -> Callable[[Seq2SeqModel, dict[str, Any]], None]:
    def apply(m: Seq2SeqModel, config: dict[str, Any]) -> None:
        for p in stack_parameters(m.base(), stack):
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
        frozen = {id(p) for s in stacks for p in stack_parameters(base, s)}
        for name, p in base.named_parameters():  # ... so give back what the treatment does not freeze
            if name in trainable and id(p) not in frozen:
                p.requires_grad_(True)

    return apply


def _mlp(where: set[str]) -> Callable[[Seq2SeqModel, dict[str, Any]], None]:
    def apply(m: Seq2SeqModel, config: dict[str, Any]) -> None:
        knobs = AdapterKnobs.from_config(config)
        m.add_adapters(where, knobs.adapter_dim, knobs.mlp_kind)

    return apply


TREATMENTS.register("full", Treatment(lambda m, c: None, 0, "full"), help="every parameter trains")
TREATMENTS.register("fix_encoder", Treatment(_fix("encoder"), 0, "fix_encoder", ("encoder",)),
                    help="encoder layer stack frozen (embeddings and output projection train)")
TREATMENTS.register("fix_decoder", Treatment(_fix("decoder"), 0, "fix_decoder", ("decoder",)),
                    help="decoder layer stack frozen (embeddings and output projection train)")
TREATMENTS.register("lora_encoder", Treatment(_lora(("encoder",)), 1, "lora", ("encoder",), LoraTreatmentKnobs),
                    help="encoder stack frozen, LoRA on its attention output projections")
TREATMENTS.register("lora_decoder", Treatment(_lora(("decoder",)), 1, "lora", ("decoder",), LoraTreatmentKnobs),
                    help="decoder stack frozen, LoRA on its attention output projections")
TREATMENTS.register("lora_all", Treatment(_lora(("encoder", "decoder")), 1, "lora", ("encoder", "decoder"),
                                          LoraTreatmentKnobs),
                    help="both stacks frozen, LoRA on all attention output projections")
TREATMENTS.register("mlp_mid", Treatment(_mlp({"mid"}), 2, "mlp", (), AdapterKnobs), help="MLP on the encoder output")
TREATMENTS.register("mlp_end", Treatment(_mlp({"end"}), 2, "mlp", (), AdapterKnobs), help="MLP on the decoder output")
TREATMENTS.register("mlp_all", Treatment(_mlp({"mid", "end"}), 2, "mlp", (), AdapterKnobs),
                    help="MLP on encoder and decoder output")

_ORDER = ("full", "fix_encoder", "fix_decoder", "lora_encoder", "lora_decoder", "lora_all",
          "mlp_mid", "mlp_end", "mlp_all")

# The paper's rows (table 2, then table 3), in canonical spelling.
PAPER_TREATMENTS: dict[str, str] = {
    "full": "Full fine-tuning",
    "fix_encoder": "Fix encoder",
    "fix_decoder": "Fix decoder",
    "fix_decoder+mlp_mid": "Fix decoder + MLP mid",
    "fix_decoder+mlp_end": "Fix decoder + MLP end",
    "fix_decoder+mlp_all": "Fix decoder + MLP all",
    "lora_all": "LoRA all",
    "lora_all+mlp_all": "LoRA all + MLP all",
    "lora_all+mlp_end": "LoRA all + MLP end",
    "lora_all+mlp_mid": "LoRA all + MLP mid",
    "fix_decoder+lora_encoder": "LoRA encoder + fixed decoder",
    "fix_encoder+lora_decoder": "Fixed encoder + LoRA decoder",
    "fix_encoder+lora_decoder+mlp_all": "Fixed encoder + LoRA decoder + MLP all",
    "fix_encoder+lora_decoder+mlp_end": "Fixed encoder + LoRA decoder + MLP end",
    "fix_encoder+lora_decoder+mlp_mid": "Fixed encoder + LoRA decoder + MLP mid",
}

# What the ``retro`` search space offers: the paper's rows (any other valid composition can be fixed).
TREATMENT_CHOICES: tuple[str, ...] = tuple(PAPER_TREATMENTS)


def validate_treatment(name: str) -> str:
    """The canonical spelling of a composition; raise :class:`StudyError` saying what is wrong.

    Rules: parts are registered; ``full`` stands alone; at most one LoRA part and one MLP part; a
    stack is frozen once (``fix_encoder+lora_encoder`` or ``fix_decoder+lora_all`` say it twice).
    """
    parts = [a.strip() for a in str(name).split("+")]
    for part in parts:
        if part not in TREATMENTS:
            raise StudyError(f"treatment {name!r}: unknown part {part!r}; combine with '+' from {list(_ORDER)}")
    if len(set(parts)) != len(parts):
        raise StudyError(f"treatment {name!r}: a part is repeated")
    if "full" in parts and len(parts) > 1:
        raise StudyError(f"treatment {name!r}: 'full' trains everything and combines with nothing")
    for group, choices in (("lora", "lora_encoder, lora_decoder, lora_all"), ("mlp", "mlp_mid, mlp_end, mlp_all")):
        if sum(TREATMENTS.get(p).group == group for p in parts) > 1:
            raise StudyError(f"treatment {name!r}: use one of {choices}")
    for stack in ("encoder", "decoder"):
        twice = [p for p in parts if stack in TREATMENTS.get(p).stacks]
        if len(twice) > 1:
            raise StudyError(f"treatment {name!r}: the {stack} is frozen by both {twice[0]} and {twice[1]}")
    return "+".join(sorted(parts, key=_ORDER.index))


def all_treatments() -> list[str]:
    """Every valid composition, canonically spelled (the paper's rows first)."""
    import itertools

    found = dict.fromkeys(PAPER_TREATMENTS)
    optional = [("fix_encoder", None), ("fix_decoder", None), ("lora_encoder", "lora_decoder", "lora_all", None),
                ("mlp_mid", "mlp_end", "mlp_all", None)]
    for combo in itertools.product(*optional):
        parts = [p for p in combo if p]
        try:
            found.setdefault(validate_treatment("+".join(parts)) if parts else "full")
        except StudyError:
            continue
    return list(found)


def parse_treatment(name: str) -> list[str]:
    """The parts of a valid composition, in canonical order."""
    return validate_treatment(name).split("+")


def treatment_knobs(name: str) -> list[type[KnobSet]]:
    """The knob models of a composition's parts (each once)."""
    found = [TREATMENTS.get(a).knobs for a in parse_treatment(name)]
    return [k for i, k in enumerate(found) if k is not None and k not in found[:i]]


def lora_treatments(choices: tuple[str, ...] = TREATMENT_CHOICES) -> list[str]:
    """The choices that use LoRA (LoRA's rank applies only to them)."""
    return [t for t in choices if any(TREATMENTS.get(a).group == "lora" for a in parse_treatment(t))]


def mlp_treatments(choices: tuple[str, ...] = TREATMENT_CHOICES) -> list[str]:
    """The choices that add MLPs (``mlp_kind`` applies only to them)."""
    return [t for t in choices if any(TREATMENTS.get(a).group == "mlp" for a in parse_treatment(t))]


def needs_pretrained(name: str) -> bool:
    """Whether a composition freezes a stack or adds LoRA (meaningless on random weights)."""
    return any(TREATMENTS.get(a).stacks for a in parse_treatment(name))


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
