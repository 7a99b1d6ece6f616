"""Effective positional embedding EPE_j = p_j + MLP⁰(p_j): the first block's MLP applied to the
raw positional embedding, no LayerNorm; input-independent (paper Figs 3 and 7)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import SinkscopeError


def _require_learned(adapter) -> torch.Tensor:
    if adapter.info().positional != "learned":
        raise SinkscopeError(f"EPE needs learned absolute positions; {adapter.info().family} uses {adapter.info().positional}")
    return adapter.W_pos


def effective_positional_embedding(adapter, n_pos: int | None = None) -> torch.Tensor:
    """``[n_pos, d_model]`` EPE for positions ``0..n_pos-1`` (all positions by default)."""
    P = _require_learned(adapter)
    P = P if n_pos is None else P[:n_pos]
    with torch.inference_mode():
        return P + adapter.mlp(0, P)


def massive_coords(vec: torch.Tensor, k_sigma: float = 3.0) -> tuple[list[int], list[float]]:
    """Coordinates ``d`` with ``|vec[d]| > mean + k·std`` of ``|vec|`` (population std), and their values.

    >>> v = torch.zeros(100); v[[3, 50]] = torch.tensor([9.0, -7.0])
    >>> massive_coords(v)
    ([3, 50], [9.0, -7.0])
    """
    a = vec.abs().double()
    thr = a.mean() + k_sigma * a.std(unbiased=False)
    idx = torch.nonzero(a > thr).flatten().tolist()
    return idx, [float(vec[i]) for i in idx]


def epe_validation(model, ids: torch.Tensor) -> torch.Tensor:
    """cos(EPE_i, R_i − O_i) per example and position, ``[example, pos]``.

    R = x + MLP⁰(x) with x = token + position embedding; O = e + MLP⁰(e) for the token
    embedding e alone (no LayerNorm, as the paper).
    """
    ad = model.adapter
    T = ids.shape[1]
    with torch.inference_mode():
        e = ad.embed(ids.to(model.device))  # [example, pos, d_model]
        p = _require_learned(ad)[:T]
        x = e + p
        R = x + ad.mlp(0, x)
        O = e + ad.mlp(0, e)
        epe = p + ad.mlp(0, p)
        return F.cosine_similarity(R - O, epe[None], dim=-1)
