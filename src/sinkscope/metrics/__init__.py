"""Sink metrics, computed from attention captured only at the keys that matter."""

from .capture import KeyAttentionCapture, attend_and_capture
from .sink import (
    aggregate,
    band_mean,
    gu_alpha,
    key_attention,
    layer_band,
    query_window,
    resolve_band,
    sink_rate,
    uniform_baseline,
)

__all__ = [
    "KeyAttentionCapture",
    "aggregate",
    "attend_and_capture",
    "band_mean",
    "gu_alpha",
    "key_attention",
    "layer_band",
    "query_window",
    "resolve_band",
    "sink_rate",
    "uniform_baseline",
]
