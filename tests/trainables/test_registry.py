from __future__ import annotations

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
