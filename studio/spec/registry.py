"""The methods the spec knows: each method module registers its ``Method`` here on import.

The spec needs a method's settings class, presets, default preset and default learning rate;
nothing else. Registration keeps the dependency pointing down (``studio.methods`` -> ``studio.spec``)
while ``RunSpec`` still validates ``method: {name: ...}`` against the right settings class.
"""
from __future__ import annotations

import importlib
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict


class MethodSettings(BaseModel):
    """Base of every method's settings: strict about unknown keys, so typos in YAML are reported."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    name: str


class MethodEntry(Protocol):
    name: str
    settings_cls: type[MethodSettings]
    presets: dict[str, MethodSettings]
    default_preset: str
    default_learning_rate: float

    def preset(self, name: str | None = None) -> MethodSettings: ...


_REGISTRY: dict[str, Any] = {}
METHODS_PACKAGE = "studio.methods"  # imported on first use, so a bare RunSpec validates in any process


def register_method(method: MethodEntry) -> None:
    _REGISTRY[method.name] = method


def _registry() -> dict[str, Any]:
    if not _REGISTRY:
        importlib.import_module(METHODS_PACKAGE)
    return _REGISTRY


def method_names() -> list[str]:
    return list(_registry())


def method_entry(name: str) -> MethodEntry:
    try:
        return _registry()[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(_registry())}") from None
