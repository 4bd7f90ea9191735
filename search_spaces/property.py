"""The ``property`` space: fine-tuning method and optimiser knobs, LoRA's rank when it applies."""

from __future__ import annotations

from search_spaces.base import SPACES, Param, SearchSpace
from trainables.methods import METHODS

__all__ = ["PROPERTY"]

PROPERTY = SearchSpace(
    (
        Param("method", "categorical", choices=METHODS.names, help="fine-tuning method"),
        Param("lr", "float", 1e-5, 3e-3, log=True, help="peak learning rate (AdamW, linear warmup/decay)"),
        Param("weight_decay", "float", 0.0, 0.1, help="AdamW weight decay"),
        Param("batch_size", "categorical", choices=(16, 32, 64), help="molecules per step"),
        Param("head_dropout", "float", 0.0, 0.5, help="dropout in the regression head"),
        Param("lora_r", "int", 2, 64, log=True, when={"method": ["lora"]}, help="LoRA rank"),
        Param("lora_alpha", "float", 1.0, 128.0, log=True, when={"method": ["lora"]}, help="LoRA scaling alpha"),
        Param("lora_dropout", "float", 0.0, 0.3, when={"method": ["lora"]}, help="dropout on the LoRA path"),
    ),
    help="property regression: method, learning rate, weight decay, batch size, head dropout, LoRA",
)
SPACES.register("property", PROPERTY, help=PROPERTY.help)
