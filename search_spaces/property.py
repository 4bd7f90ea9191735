"""The ``property`` space: the property task's knobs and the fine-tuning methods' own (LoRA's only for LoRA)."""

from __future__ import annotations

from search_spaces.base import SPACES, Param, SearchSpace, params_of, plugin_params
from trainables.methods import METHODS
from trainables.property.knobs import PropertyKnobs

__all__ = ["PROPERTY", "property_params"]


def property_params() -> list[Param]:
    """The task's knobs (data selection aside) and each method's knobs, for its method only."""
    return params_of(PropertyKnobs, omit=("selection",)) + plugin_params(
        "method", METHODS.names(), lambda name: [METHODS.knobs(name)])


PROPERTY = SearchSpace(
    tuple(property_params()),
    help="property regression: method, learning rate, weight decay, batch size, head dropout, LoRA",
)
SPACES.register("property", PROPERTY, help=PROPERTY.help)
