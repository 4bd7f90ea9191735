"""The one registry primitive: named plug-ins whose keys drive the CLI and the search spaces.

A plug-in whose implementation needs torch, transformers or peft is *declared* where its registry
lives (:meth:`Registry.register_lazy`: name, help, the module that registers it, and its knobs), so
that listing names, help and the search spaces never imports those libraries (``chemtune list``
stays under a second); the first :meth:`Registry.get` imports the module, which registers the
entry as any plug-in does.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from trainables.errors import UnknownNameError

__all__ = ["Registry"]

T = TypeVar("T")


@dataclass(frozen=True)
class _Lazy:
    """A declared entry whose module has not been imported yet."""

    module: str
    knobs: str | None  # "module:attr" of its knob model, in a light module


def _attr(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry(Generic[T]):
    """A mapping from names to plug-ins of one kind.

    Args:
        kind: What the entries are ("dataset", "method", ...); used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | _Lazy] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, obj: T | None = None, *, help: str = "") -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; without ``obj`` return a decorator.

        A name declared with :meth:`register_lazy` is filled in; the entry must agree with its
        declaration (help, knobs), or the listing would describe another plug-in than the one that runs.
        """

        def add(entry: T) -> T:
            declared = self._entries.get(name)
            if name in self._entries and not isinstance(declared, _Lazy):
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if isinstance(declared, _Lazy):
                self._check_declaration(name, declared, entry, help)
            self._entries[name] = entry
            self._help[name] = help or self._help.get(name) or (getattr(entry, "__doc__", "") or "").strip().split("\n")[0]
            return entry

        return add if obj is None else add(obj)

    def register_lazy(self, name: str, module: str, *, help: str, knobs: str | None = None) -> None:
        """Declare ``name``, registered by importing ``module`` on the first :meth:`get`.

        Args:
            name: The entry's name.
            module: Dotted module that calls :meth:`register` for ``name`` when imported.
            help: One line for ``chemtune list`` (shown without importing ``module``).
            knobs: ``"module:attr"`` of the entry's knob model, in a module that is cheap to import
                (search spaces read it without loading the implementation); ``None``: it has none.
        """
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = _Lazy(module, knobs)
        self._help[name] = help

    def _check_declaration(self, name: str, declared: _Lazy, entry: T, help: str) -> None:
        if help and help != self._help[name]:
            raise ValueError(f"{self.kind} {name!r}: help {help!r} differs from its declaration {self._help[name]!r}")
        knobs = _attr(declared.knobs) if declared.knobs else None
        if getattr(entry, "knobs", None) is not knobs:
            raise ValueError(f"{self.kind} {name!r}: knobs {getattr(entry, 'knobs', None)!r} differ from its "
                             f"declaration {declared.knobs!r}")

    def get(self, name: str) -> T:
        """Return the entry ``name`` (importing its module if declared lazily); an unknown name raises
        with the known choices."""
        self.check(name)
        entry = self._entries[name]
        if isinstance(entry, _Lazy):
            importlib.import_module(entry.module)
            entry = self._entries[name]
            if isinstance(entry, _Lazy):
                raise RuntimeError(f"{self.kind} {name!r}: importing {entry.module} did not register it")
        return entry  # type: ignore[return-value]

    def check(self, name: str) -> None:
        """Raise :class:`UnknownNameError` (with the choices) unless ``name`` is registered; imports nothing."""
        if name not in self._entries:
            raise UnknownNameError(self.kind, name, self.names())

    def knobs(self, name: str) -> Any:
        """The knob model of entry ``name`` (its ``knobs`` attribute), or ``None``.

        A lazily declared entry answers from its declaration without importing its module.
        """
        self.check(name)
        entry = self._entries[name]
        if isinstance(entry, _Lazy):
            return _attr(entry.knobs) if entry.knobs else None
        return getattr(entry, "knobs", None)

    def help(self, name: str) -> str:
        """One line describing the entry ``name``."""
        self.check(name)
        return self._help[name]

    def names(self) -> list[str]:
        """Registered names in registration (or declaration) order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
