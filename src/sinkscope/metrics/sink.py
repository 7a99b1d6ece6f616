"""Sink metrics from captured key attention ``probs [batch, layer, head, q_pos, key]``.

* :func:`key_attention` - the paper's "BOS attention" when ``key=0``: mean attention that the
  second-half queries (``T//2 .. T-1``) pay to a key, per example × layer × head.
* :func:`gu_alpha` - Gu et al.'s α_h^l(k): mean attention to key ``k`` over the queries that can
  see it (``i >= k``); :func:`sink_rate` - Sink_k^ε, the share of (example, layer, head) with α > ε.
* :func:`layer_band` / :func:`aggregate` - the paper's band (layers 4..11 of 12, 1-indexed) scaled
  to any depth, and mean / SE / ±2SE / % of baseline over examples.

>>> import torch
>>> p = torch.full((2, 1, 1, 4, 1), 0.25)  # uniform-ish attention to key 0
>>> key_attention(p, 0).flatten().tolist()
[0.25, 0.25]
>>> layer_band(12), layer_band(30), layer_band(6)
((3, 11), (8, 28), (2, 6))
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..parsing import PAPER_BAND_12, layer_band, resolve_band  # noqa: E402,F401  (torch-free)


def query_window(T: int) -> slice:
    """Second half of the sequence: indices ``T//2 .. T-1`` (20..39 for T=40)."""
    return slice(T // 2, T)


def _masked_query_mean(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [batch, layer, head, q_pos]`` over the query positions where ``keep [batch, q_pos]``."""
    keep = keep.to(x.dtype)[:, None, None, :]
    return (x * keep).sum(-1) / keep.sum(-1)


def key_attention(
    probs: torch.Tensor,
    key_index: int = 0,
    queries: slice | None = None,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean attention from ``queries`` (default: the second half) to captured key column ``key_index``.

    ``probs [batch, layer, head, q_pos, key]`` -> ``[batch, layer, head]``. With ``lengths [batch]``
    (right-padded inputs of different lengths) the default window is each example's own second
    half, ``len//2 .. len-1``.
    """
    T = probs.shape[3]
    if lengths is None:
        q = query_window(T) if queries is None else queries
        return probs[:, :, :, q, key_index].mean(dim=-1)
    if queries is not None:
        raise ValueError("pass either queries or lengths")
    pos = torch.arange(T, device=probs.device)[None, :]
    lengths = lengths.to(probs.device)[:, None]
    return _masked_query_mean(probs[..., key_index], (pos >= lengths // 2) & (pos < lengths))


def gu_alpha(
    probs: torch.Tensor, key_index: int, key_pos: int, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """Gu et al.'s α: mean attention to the key at position ``key_pos`` over queries ``i >= key_pos``
    (and ``i < length`` with ``lengths``).

    ``probs [batch, layer, head, q_pos, key]`` -> ``[batch, layer, head]``.
    """
    if lengths is None:
        return probs[:, :, :, key_pos:, key_index].mean(dim=-1)
    pos = torch.arange(probs.shape[3], device=probs.device)[None, :]
    return _masked_query_mean(
        probs[..., key_index], (pos >= key_pos) & (pos < lengths.to(probs.device)[:, None])
    )


def sink_rate(alpha: torch.Tensor | np.ndarray, eps: float = 0.3) -> float:
    """Sink_k^ε: share of (example, layer, head) entries whose α exceeds ``eps``."""
    a = torch.as_tensor(alpha)
    return float((a > eps).double().mean())


def uniform_baseline(T: int | Sequence[int], queries: slice | None = None) -> float:
    """BOS attention of a head that attends uniformly to the causal prefix: mean of 1/(i+1) over
    the query window; for several lengths, the mean of their values."""
    if not isinstance(T, (int, np.integer)):
        return float(np.mean([uniform_baseline(int(t), queries) for t in T]))
    q = query_window(T) if queries is None else queries
    idx = np.arange(T)[q]
    return float(np.mean(1.0 / (idx + 1)))


SE_ESTIMATOR = "std (ddof=1) / sqrt(n)"  # the SE of every aggregate (the paper's too)


def aggregate(values: Sequence[float] | np.ndarray, baseline: float | None = None) -> dict:
    """Mean, SE (std ddof=1 / sqrt n), mean ± 2SE and, given a baseline mean, % of it.

    >>> aggregate([1.0, 2.0, 3.0], baseline=4.0)["pct_baseline"]
    50.0
    """
    v = np.asarray(values, dtype=np.float64)
    n = int(v.size)
    mean = float(v.mean()) if n else float("nan")
    se = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    out = {"mean": mean, "se": se, "ci_low": mean - 2 * se, "ci_high": mean + 2 * se, "n": n}
    if baseline is not None:
        out["pct_baseline"] = 100.0 * mean / baseline if baseline else float("nan")
    return out


def band_mean(per_head: torch.Tensor | np.ndarray, band: tuple[int, int]) -> np.ndarray:
    """Per-example value: mean over heads, then over layers in ``band``.

    ``per_head [example, layer, head]`` -> ``[example]``.
    """
    x = torch.as_tensor(per_head)
    return x[:, band[0] : band[1]].mean(dim=2).mean(dim=1).numpy()
