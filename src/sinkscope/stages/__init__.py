"""The study stages, one module each, registered with :func:`sinkscope.registry.register_stage`
(``measure``, ``explain``, ``intervene``, ``compare``, ``mitigate``, ``shared-query``), and the
runner that checks, loads, computes and writes a stage (:mod:`sinkscope.stages.runner`).

A new file here that registers a stage is a new ``sinkscope`` command, a ``reproduce`` step and
a report section; nothing else changes (``docs/contributing.md``). Modules stay light at import
(torch and pandas load inside the functions), so ``sinkscope --help`` is fast.
"""

from __future__ import annotations

from .._lazy import lazy_package

__getattr__, __dir__, __all__ = lazy_package(__name__, globals(), {})  # submodules on first use
