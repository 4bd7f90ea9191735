from __future__ import annotations

import sys
import types

import pytest

from trainables.errors import UnknownNameError
from trainables.registry import Registry


def test_register_get_and_names_keep_order() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("b", 2, help="bee")
    reg.register("a")(1)
    assert reg.names() == ["b", "a"]
    assert reg.get("a") == 1 and reg.help("b") == "bee"
    assert "a" in reg and "z" not in reg and len(reg) == 2


def test_unknown_name_lists_choices() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("only", 1)
    with pytest.raises(UnknownNameError, match=r"unknown thing 'nope'; choose one of: only"):
        reg.get("nope")


def test_double_registration_is_an_error() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("x", 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("x", 2)


def _plugin(tmp_path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> str:
    """A throwaway plug-in module ``name`` on sys.path (unloaded again after the test)."""
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_lazy_entry_lists_without_importing_and_loads_on_get(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg: Registry[object] = Registry("thing")
    (tmp_path / "light_knobs.py").write_text("class K:\n    pass\n")
    module = _plugin(tmp_path, monkeypatch, "heavy_plugin", (
        "import light_knobs\nfrom test_reg_home import REG\n"
        "class Impl:\n    knobs = light_knobs.K\n"
        "REG.register('b', Impl, help='bee')\n"))
    home = types.ModuleType("test_reg_home")
    home.REG = reg
    monkeypatch.setitem(sys.modules, "test_reg_home", home)
    monkeypatch.delitem(sys.modules, "light_knobs", raising=False)
    reg.register("a", 1, help="eager")
    reg.register_lazy("b", module, help="bee", knobs="light_knobs:K")

    assert reg.names() == ["a", "b"] and "b" in reg and len(reg) == 2
    assert reg.help("b") == "bee"
    assert reg.knobs("b").__name__ == "K" and reg.knobs("a") is None
    assert module not in sys.modules  # names, help and knobs read the declaration only

    entry = reg.get("b")
    assert module in sys.modules and entry.__name__ == "Impl" and entry.knobs is reg.knobs("b")
    assert reg.get("b") is entry and reg.help("b") == "bee"


def test_lazy_declaration_errors(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg: Registry[int] = Registry("thing")
    home = types.ModuleType("test_reg_home")
    home.REG = reg
    monkeypatch.setitem(sys.modules, "test_reg_home", home)
    silent = _plugin(tmp_path, monkeypatch, "silent_plugin", "x = 1\n")
    reg.register_lazy("quiet", silent, help="registers nothing")
    with pytest.raises(RuntimeError, match=r"importing silent_plugin did not register it"):
        reg.get("quiet")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register_lazy("quiet", silent, help="again")
    with pytest.raises(UnknownNameError, match=r"unknown thing 'nope'; choose one of: quiet"):
        reg.check("nope")

    reg.register_lazy("drift", "unused", help="declared help")
    with pytest.raises(ValueError, match=r"help 'other help' differs from its declaration 'declared help'"):
        reg.register("drift", 3, help="other help")
    reg.register("drift", 3)  # no help given: the declared one stays
    assert reg.get("drift") == 3 and reg.help("drift") == "declared help"
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("drift", 4)


def test_every_builtin_declaration_matches_its_plugin() -> None:
    """Each lazily declared built-in loads, and its module registers it with the declared help and knobs
    (``Registry.register`` refuses an entry that disagrees with its declaration)."""
    from search_spaces import SPACES
    from trainables.base import TASKS
    from trainables.data.datasets import DATASETS
    from trainables.methods import METHODS
    from trainables.models.backbones import BACKBONES
    from trainables.selection.base import SELECTORS
    from trainables.selection.knobs import SUBSETS

    for reg in (TASKS, DATASETS, METHODS, BACKBONES, SELECTORS, SUBSETS, SPACES):
        for name in reg.names():
            entry = reg.get(name)
            assert getattr(entry, "knobs", None) is reg.knobs(name), (reg.kind, name)
    assert TASKS.names() == ["property", "retro", "pretrain"]
    assert DATASETS.names()[-2:] == ["uspto50k", "reactions-csv"] and DATASETS.get("uspto50k").kind == "reactions"
    assert SELECTORS.names() == ["none", "active", "curriculum", "influence"]  # the order the spaces sample in
