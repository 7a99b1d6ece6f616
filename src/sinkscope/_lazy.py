"""Lazy package attributes (PEP 562): ``import sinkscope.cli`` must not import torch, so the
packages name their exports here and import the submodule on first use."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``exports[name]`` (a submodule)
    when ``name`` is first asked for.

    >>> getattr_ = lazy_exports("sinkscope", {"SinkscopeError": "errors"})
    >>> getattr_("SinkscopeError").__name__
    'SinkscopeError'
    """

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        try:  # a submodule (``sinkscope.models``, ``sinkscope.data.corpus``), imported on first use
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{package}.{name}":
                raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def lazy_dir(module_globals: dict, exports: dict[str, str]) -> Callable[[], list[str]]:
    """A module ``__dir__`` that lists the lazy exports too."""
    return lambda: sorted(set(module_globals) | set(exports))


def lazy_package(
    package: str, module_globals: dict, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """A package's ``(__getattr__, __dir__, __all__)`` for its lazy ``exports``: one line in each
    ``__init__.py``.

    >>> getattr_, dir_, all_ = lazy_package("sinkscope", {}, {"SinkscopeError": "errors"})
    >>> all_, dir_(), getattr_("SinkscopeError").__name__
    (['SinkscopeError'], ['SinkscopeError'], 'SinkscopeError')
    """
    return lazy_exports(package, exports), lazy_dir(module_globals, exports), sorted(exports)
