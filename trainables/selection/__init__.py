"""Data-selection methods for property trials; importing this package registers them in ``SELECTORS``.

- ``influence``: influence functions with LiSSA (:mod:`trainables.selection.influence`)
- ``curriculum``: easy-to-hard pacing (:mod:`trainables.selection.curriculum`)
- ``active``: MC-dropout uncertainty or random acquisition (:mod:`trainables.selection.active`)
"""

from trainables.selection import active, curriculum, influence  # noqa: F401  (registers the selectors)

__all__ = ["active", "curriculum", "influence"]
