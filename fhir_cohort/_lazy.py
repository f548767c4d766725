"""Lazy package attributes: ``import fhir_cohort.fhir.wire`` must not load pandas, pydantic or
the engine just because a package ``__init__`` re-exports them (every CLI call pays for it).

A package lists ``{name: module}`` and gets a module ``__getattr__``/``__dir__`` (PEP 562); the
module is imported on first access and the value cached in the package's namespace.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose attribute ``name`` lives in
    ``exports[name]`` (a full module name)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(importlib.import_module(package))) | set(exports))

    return __getattr__, __dir__
