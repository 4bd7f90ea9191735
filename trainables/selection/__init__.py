"""Data-selection methods for property trials, registered in ``SELECTORS`` on first use.

- ``influence``: influence functions with LiSSA (:mod:`trainables.selection.influence`)
- ``curriculum``: easy-to-hard pacing (:mod:`trainables.selection.curriculum`)
- ``active``: MC-dropout uncertainty or random acquisition (:mod:`trainables.selection.active`)

Nothing is imported here: ``trainables.selection.base`` declares each method (and its knobs, in the
light :mod:`trainables.selection.knobs`), and ``SELECTORS.get`` imports the module that needs torch.
"""

__all__ = ["active", "curriculum", "influence"]
