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

torch, transformers and peft are imported where a treatment is applied (the modules it builds live
in :mod:`trainables.retro.adapters`, with :func:`~trainables.retro.adapters.apply_treatment`): the ``retro``
search space reads this module without them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from pydantic import Field, field_validator

from trainables.errors import StudyError
from trainables.knobs import KnobSet, Search
from trainables.registry import Registry

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedModel

__all__ = [
    "TREATMENTS", "PAPER_TREATMENTS", "TREATMENT_CHOICES", "MLP_KINDS",
    "validate_treatment", "parse_treatment", "attention_output_projections", "TreatedModel",
    "stack_parameters", "lora_treatments", "mlp_treatments", "all_treatments", "needs_pretrained",
    "LoraTreatmentKnobs", "AdapterKnobs", "treatment_knobs", "freeze_embeddings",
]

# Leaf names of attention output projections: BART/T5/Llama-like, BERT (attention.output.dense).
_OUT_PROJ = re.compile(r"(\.out_proj|\.o_proj|\.o|attention\.output\.dense|\.c_proj)$")
# Modules of a stack that are embeddings, not layers (they keep training when the stack is fixed).
_EMBEDDING = re.compile(r"(^|\.)(embed_tokens|embed_positions|embeddings|layernorm_embedding|shared|wte|wpe)$")
# Output heads inside a decoder module (BERT2BERT: ``cls``), which are not part of the layer stack.
_HEAD = re.compile(r"(^|\.)(lm_head|cls)$")

MLP_KINDS = ("paper", "bottleneck")


class TreatedModel(Protocol):
    """What a part acts on: :class:`trainables.retro.adapters.Seq2SeqModel` (declared here as a protocol, so
    this torch-free module does not import the one that builds the modules and applies the treatments)."""

    model: Any

    def base(self) -> PreTrainedModel: ...

    def add_adapters(self, where: set[str], dim: int, kind: str = "paper") -> None: ...


@dataclass(frozen=True)
class Treatment:
    """A registered part: ``apply(model, config)`` acts on a :class:`TreatedModel` in place."""

    apply: Callable[["TreatedModel", dict[str, Any]], None]
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


def _part(model: PreTrainedModel, stack: str) -> nn.Module:
    return model.get_encoder() if stack == "encoder" else model.get_decoder()


def stack_parameters(model: PreTrainedModel, stack: str) -> list[nn.Parameter]:
    """The parameters of a layer stack: the encoder's/decoder's modules less embeddings and output heads."""
    from torch import nn

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
    from torch import nn

    inside = {id(m) for m in _part(model, stack).modules()}
    names = [n for n, m in model.named_modules()
             if id(m) in inside and isinstance(m, nn.Linear) and _OUT_PROJ.search(n)]
    if not names:
        raise StudyError(f"no attention output projections found in the {stack} of {type(model).__name__}; "
                         "LoRA cannot be placed")
    return names


def _fix(stack: str) -> Callable[[TreatedModel, dict[str, Any]], None]:
    def apply(m: TreatedModel, config: dict[str, Any]) -> None:
        for p in stack_parameters(m.base(), stack):
            p.requires_grad_(False)

    return apply


def _lora(stacks: tuple[str, ...]) -> Callable[[TreatedModel, dict[str, Any]], None]:
    def apply(m: TreatedModel, config: dict[str, Any]) -> None:
        from peft import LoraConfig, get_peft_model

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


def _mlp(where: set[str]) -> Callable[[TreatedModel, dict[str, Any]], None]:
    def apply(m: TreatedModel, config: dict[str, Any]) -> None:
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


def freeze_embeddings(model: PreTrainedModel) -> int:
    """Freeze the token embeddings (and a tied or separate output projection) and learned positions.

    The ``train_embeddings: false`` side of a frozen-stack row: the report does not say whether the shared
    embedding trained when a stack was frozen, so chemtune keeps Chemformer's way (it trains) by default
    and makes the other reading a knob. Returns how many parameters were frozen.
    """
    from torch import nn

    seen: set[int] = set()
    modules = [model.get_input_embeddings(), model.get_output_embeddings()]
    modules += [m for n, m in model.named_modules() if isinstance(m, nn.Embedding) or _EMBEDDING.search(n)]
    for module in modules:
        for p in module.parameters() if module is not None else ():
            if id(p) not in seen and p.requires_grad:
                seen.add(id(p))
                p.requires_grad_(False)
    return len(seen)


def needs_pretrained(name: str) -> bool:
    """Whether a composition freezes a stack or adds LoRA (meaningless on random weights)."""
    return any(TREATMENTS.get(a).stacks for a in parse_treatment(name))
