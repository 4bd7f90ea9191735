"""Fine-tuning methods: which backbone parameters train. Each is one registered ``apply``.

torch and peft are imported inside the functions: the registry and ``LoraKnobs`` are read by
``chemtune list`` and the search spaces, which must not pay for them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from trainables.knobs import KnobSet, Search
from trainables.registry import Registry

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "METHODS", "Method", "LoraKnobs", "apply_method", "count_parameters", "export_backbone", "resolve_targets", "ia3_targets",
]


@dataclass(frozen=True)
class Method:
    """A registered fine-tuning method: ``apply(backbone, config) -> backbone`` sets what trains.

    ``knobs`` declares the method's own knobs (read from the trial config); ``None`` if it has none.
    """

    apply: Callable[[nn.Module, dict[str, Any]], nn.Module]
    knobs: type[KnobSet] | None = None


class LoraKnobs(KnobSet):
    """Knobs of ``method: lora``."""

    lora_r: Annotated[int, Search(2, 64, log=True)] = Field(8, ge=1, description="LoRA rank")
    lora_alpha: Annotated[float | None, Search(1.0, 128.0, log=True)] = Field(
        None, gt=0, description="LoRA scaling alpha (default: twice the rank)")
    lora_dropout: Annotated[float, Search(0.0, 0.3)] = Field(0.0, ge=0, lt=1, description="dropout on the LoRA path")
    lora_targets: list[str] | None = Field(
        None, description="module names LoRA wraps (default: PEFT's mapping, else the attention q/v projections)")


METHODS: Registry[Method] = Registry("method")

# Names of attention projections across architectures, for models PEFT has no mapping for
# (MoLFormer's remote code, say): the query/value pair first, as LoRA's paper does.
_QV = ("query", "value", "q_proj", "v_proj", "q", "v", "Wqkv", "qkv", "c_attn")


def resolve_targets(model: nn.Module, mapping: dict[str, list[str]]) -> list[str]:
    """Target modules for ``model``: PEFT's mapping for its model type, else its q/v projections."""
    from torch import nn

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in mapping:
        return list(mapping[model_type])
    leaf_names = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, nn.Linear)}
    found = [n for n in _QV if n in leaf_names]
    if not found:
        raise ValueError(f"no attention projections found in {type(model).__name__}; set lora targets explicitly")
    return found


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def apply_method(name: str, backbone: nn.Module, config: dict[str, Any]) -> nn.Module:
    """Apply the registered method ``name`` to ``backbone``."""
    return METHODS.get(name).apply(backbone, config)


def export_backbone(backbone: nn.Module) -> nn.Module:
    """A plain transformers model for serving: PEFT adapters merged into a copy."""
    from peft import PeftModel

    if isinstance(backbone, PeftModel):
        return copy.deepcopy(backbone).merge_and_unload()
    return backbone


def _full(backbone: nn.Module, config: dict[str, Any]) -> nn.Module:
    backbone.requires_grad_(True)
    return backbone


def _bitfit(backbone: nn.Module, config: dict[str, Any]) -> nn.Module:
    for name, param in backbone.named_parameters():
        param.requires_grad_(name.endswith("bias"))
    return backbone


def _lora(backbone: nn.Module, config: dict[str, Any]) -> nn.Module:
    from peft import LoraConfig, get_peft_model
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as LORA_TARGETS

    knobs = LoraKnobs.from_config(config)
    lora = LoraConfig(
        r=knobs.lora_r,
        lora_alpha=knobs.lora_alpha or 2 * knobs.lora_r,
        lora_dropout=knobs.lora_dropout,
        target_modules=knobs.lora_targets or resolve_targets(backbone, LORA_TARGETS),
        bias="none",
    )
    return get_peft_model(backbone, lora)


# (IA)^3 rescales keys, values and the FFN's inner activations (the input of the FFN's second linear).
_KEYS = ("key", "k_proj", "k", "Wk")
_VALUES = ("value", "v_proj", "v", "Wv")
_FFN_OUT = ("fc2", "dense_4h_to_h", "down_proj", "wo")


def ia3_targets(model: nn.Module) -> tuple[list[str], list[str]]:
    """``(target_modules, feedforward_modules)`` for (IA)^3: PEFT's mapping, else keys, values and FFN found by name.

    Models PEFT has no mapping for (MoLFormer's remote code) are searched for their key and value
    projections and the FFN's second linear (``output.dense`` outside the attention block, ``fc2``...).
    Raise ``ValueError`` when any of the three is missing: (IA)^3 on queries/values only would be a
    different method.
    """
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as IA3_FF,
        TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as IA3_TARGETS,
    )
    from torch import nn

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in IA3_TARGETS and model_type in IA3_FF:
        return list(IA3_TARGETS[model_type]), list(IA3_FF[model_type])
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    keys = [n for n in names if n.rsplit(".", 1)[-1] in _KEYS]
    values = [n for n in names if n.rsplit(".", 1)[-1] in _VALUES]
    ffn = [n for n in names if n.rsplit(".", 1)[-1] in _FFN_OUT
           or (n.endswith("output.dense") and not n.endswith("attention.output.dense"))]
    missing = [what for what, found in (("keys", keys), ("values", values), ("the FFN", ffn)) if not found]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise ValueError(f"(IA)^3 on {type(model).__name__} (model_type {model_type!r}): could not find "
                         f"{', '.join(missing)} among its linear layers {leaves}; (IA)^3 needs keys, values and the FFN")
    return keys + values + ffn, ffn


def _ia3(backbone: nn.Module, config: dict[str, Any]) -> nn.Module:
    from peft import IA3Config, get_peft_model

    targets, feedforward = ia3_targets(backbone)
    return get_peft_model(backbone, IA3Config(target_modules=targets, feedforward_modules=feedforward))


METHODS.register("full", Method(_full), help="every backbone parameter trains")
METHODS.register("bitfit", Method(_bitfit), help="only bias terms of the backbone (and the head) train")
METHODS.register("lora", Method(_lora, LoraKnobs), help="low-rank adapters on attention projections (PEFT)")
METHODS.register("ia3", Method(_ia3), help="(IA)^3 rescaling of keys, values and the FFN (PEFT)")
