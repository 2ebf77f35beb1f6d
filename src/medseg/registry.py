"""A tiny registry: ``register(name)`` as a decorator, ``build(name, **kw)``, ``names()``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medseg.errors import ConfigError, did_you_mean


class Registry:
    """Named factories of one kind (models, losses, ...), with helpful errors for unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = fn
            self._help[name] = help or (fn.__doc__ or "").strip().split("\n")[0]
            return fn

        return deco

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}; valid names: "
                              f"{', '.join(self.names())}") from None

    def build(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def describe(self) -> dict[str, str]:
        return {n: self._help[n] for n in self.names()}

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self):
        return iter(self.names())
