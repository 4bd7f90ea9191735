"""chemprop 2.3 (an optional extra): imported here once, with a clear error when it is missing.

chemprop 2.3 imports ``cuik_molmaker`` (a GPU featurizer compiled against one exact RDKit release)
at module level, although the CPU featurizer chemtune uses never touches it. Installing its
``cuik_molmaker_pin`` wheel would downgrade RDKit under everything else, so where it is absent an
empty placeholder module lets chemprop import; using a cuik featurizer then fails with an
``AttributeError`` that names the missing package.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

from trainables.errors import StudyError

__all__ = ["chemprop_available", "import_chemprop", "INSTALL_HINT"]

# Two steps: chemprop's own metadata would pull cuik_molmaker_pin and with it another RDKit (pyproject.toml).
INSTALL_HINT = "pip install 'chemtune[chemprop]' && pip install --no-deps chemprop==2.3.1"


def chemprop_available() -> bool:
    """Whether ``chemprop`` and ``lightning`` are installed (without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("chemprop", "lightning"))


def _placeholder_cuik() -> None:
    if "cuik_molmaker" in sys.modules or importlib.util.find_spec("cuik_molmaker") is not None:
        return
    module = types.ModuleType("cuik_molmaker")

    def missing(name: str) -> Any:
        raise AttributeError(f"cuik_molmaker.{name}: cuik_molmaker is not installed (chemtune uses chemprop's CPU featurizer)")

    module.__getattr__ = missing  # type: ignore[method-assign]
    sys.modules["cuik_molmaker"] = module


def import_chemprop(what: str) -> types.ModuleType:
    """``chemprop`` with its submodules loaded, or a :class:`StudyError` saying who asked and how to install it."""
    if not chemprop_available():
        raise StudyError(f"{what} needs chemprop 2.3 and lightning, which are not installed; {INSTALL_HINT}")
    _placeholder_cuik()
    import chemprop
    from chemprop import data, featurizers, models, nn  # noqa: F401  (loads the submodules)

    return chemprop
