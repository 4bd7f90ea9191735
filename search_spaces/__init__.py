"""Optuna define-by-run search spaces, one registered module each."""

from search_spaces.base import SPACES, Param, SearchSpace, params_of, plugin_params

# Registration order is the order `chemtune list spaces` shows.
# isort: off
from search_spaces import property as _property  # noqa: F401  (registers "property")
from search_spaces import selection as _selection  # noqa: F401  (registers "selection")
from search_spaces import retro as _retro  # noqa: F401  (registers "retro")
from search_spaces import dmpnn as _dmpnn  # noqa: F401  (registers "dmpnn", "property_mix")
from search_spaces import pretrain as _pretrain  # noqa: F401  (registers "pretrain")
# isort: on

__all__ = ["SPACES", "Param", "SearchSpace", "params_of", "plugin_params"]
