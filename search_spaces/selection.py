"""The ``selection`` space: the ``property`` knobs plus which data-selection method, and each method's knobs."""

from __future__ import annotations

from search_spaces.base import SPACES, SearchSpace, params_of, plugin_params
from search_spaces.property import property_params
from trainables.property.knobs import PropertyKnobs
from trainables.selection.base import SELECTORS

__all__ = ["SELECTION"]

SELECTION = SearchSpace(
    tuple(
        property_params()
        + params_of(PropertyKnobs, omit=[n for n in PropertyKnobs.model_fields if n != "selection"])
        + plugin_params("selection", SELECTORS.names(), lambda name: [SELECTORS.knobs(name)])
    ),
    help="property + data selection: influence (top_k, LiSSA), curriculum (bins), active learning (MC dropout)",
)
SPACES.register("selection", SELECTION, help=SELECTION.help)
