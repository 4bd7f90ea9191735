"""Molecular property regression: the ``property`` task, its knobs, data, D-MPNN branch, serving and baselines.

- :mod:`.task`: the language-model trainer and the task's registration (``TASKS``: ``property``)
- :mod:`.knobs`: its declared knobs (no torch: search spaces and ``chemtune list`` read them)
- :mod:`.data`: the prepared splits (``PropertyData``) and ``regression_metrics``
- :mod:`.dmpnn`: the ``arch: dmpnn`` branch (chemprop's D-MPNN under the same trial contract)
- :mod:`.serving`: the saved model directory and its MLflow pyfunc; :mod:`.ensemble`: several served as one
- :mod:`.baselines`: peer baselines fitted on the study's splits; :mod:`.augment`: SMILES enumeration, TTA

Importing the package is cheap: nothing is imported here; ``TASKS.get("property")`` imports :mod:`.task`.
"""

__all__ = ["augment", "baselines", "data", "dmpnn", "ensemble", "knobs", "serving", "task"]
