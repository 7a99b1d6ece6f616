"""Experiment recipes (one per CLI command)."""
from .measure import MeasureResult, measure

__all__ = ["MeasureResult", "measure"]
