"""Per-head views of ``nn.Linear`` projections, in TransformerLens orientation (``x @ W``):
``[n_heads*d_head, d_in]`` weights split into ``[n_heads, d_in, d_head]``."""

from __future__ import annotations

import torch
from torch import nn


def linear_heads(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``nn.Linear`` weight ``[n_heads*d_head, d_in]`` -> ``[n_heads, d_in, d_head]``."""
    out_features, d_in = weight.shape
    assert out_features % n_heads == 0, (weight.shape, n_heads)
    return weight.T.reshape(d_in, n_heads, out_features // n_heads).permute(1, 0, 2)


def linear_qkv(lin: nn.Linear, n_heads: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(W [n_heads, d_in, d_head], b [n_heads, d_head] | None)`` of a Q/K/V ``nn.Linear``;
    meta (missing) tensors are passed through for the caller to report."""
    w, b = lin.weight, lin.bias
    if w.is_meta:
        return w, b
    return linear_heads(w, n_heads), (
        b.reshape(n_heads, -1) if b is not None and not b.is_meta else b
    )


def linear_out(lin: nn.Linear, n_heads: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(W_O [n_heads, d_head, d_out], b [d_out] | None)`` of an output ``nn.Linear`` ``[d_out, H*dh]``."""
    w = lin.weight
    if w.is_meta:
        return w, lin.bias
    d_out, hd = w.shape
    return w.T.reshape(n_heads, hd // n_heads, d_out), lin.bias
