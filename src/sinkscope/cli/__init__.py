"""The command line: ``sinkscope <command>`` (see :mod:`sinkscope.cli.main`)."""

from __future__ import annotations

from .main import build_parser, console, main

__all__ = ["build_parser", "console", "main"]
