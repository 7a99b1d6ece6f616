"""Effective positional embedding EPE_j = p_j + MLP⁰(p_j): the first block's MLP applied to the
raw positional embedding, no LayerNorm; input-independent (paper Figs 3 and 7)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..errors import SinkscopeError

if TYPE_CHECKING:
    from ..models import Adapter, SinkModel


def _require_learned(adapter) -> torch.Tensor:
    if adapter.info().positional != "learned":
        raise SinkscopeError(
            f"EPE needs learned absolute positions; {adapter.info().family} uses {adapter.info().positional}"
        )
    return adapter.W_pos


def effective_positional_embedding(adapter: Adapter, n_pos: int | None = None) -> torch.Tensor:
    """``[n_pos, d_model]`` EPE for positions ``0..n_pos-1`` (all positions by default)."""
    P = _require_learned(adapter)
    P = P if n_pos is None else P[:n_pos]
    with torch.inference_mode():
        return P + adapter.mlp(0, P)


def massive_coords(
    vec: torch.Tensor, k_sigma: float = 3.0, ddof: int = 0
) -> tuple[list[int], list[float]]:
    """Coordinates ``d`` with ``|vec[d]| > mean + k·std`` of ``|vec|`` (population std; ``ddof=1``:
    the sample std), and their values.

    >>> v = torch.zeros(100); v[[3, 50]] = torch.tensor([9.0, -7.0])
    >>> massive_coords(v)
    ([3, 50], [9.0, -7.0])
    """
    a = vec.abs().double()
    thr = a.mean() + k_sigma * a.std(correction=ddof)
    idx = torch.nonzero(a > thr).flatten().tolist()
    return idx, [float(vec[i]) for i in idx]


def epe_validation(model: SinkModel, ids: torch.Tensor) -> torch.Tensor:
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


class _Enough(Exception):
    """Raised by the block-0 hook: the rest of the forward pass is not needed."""


def block0_output(model: SinkModel, ids: torch.Tensor, *, positions: bool = True) -> torch.Tensor:
    """The residual stream after block 0 in the model's own forward pass (its causal mask and
    position ids), ``[example, pos, d_model]``; ``positions=False`` zeroes the positional
    embedding (the token embedding alone). The later blocks are not run."""
    ad = model.adapter
    got: dict = {}

    def grab(mod, args, out):
        got["x"] = out[0] if isinstance(out, tuple) else out
        raise _Enough

    handles = [ad.layers()[0].register_forward_hook(grab)]
    if not positions:
        handles.append(
            ad.position_embedding_module().register_forward_hook(
                lambda mod, args, out: torch.zeros_like(out)
            )
        )
    try:
        with torch.inference_mode():
            ad.trunk()(input_ids=ids.to(model.device), use_cache=False)
    except _Enough:
        pass
    finally:
        for h in handles:
            h.remove()
    return got["x"]


def epe_validation_full_block(model: SinkModel, ids: torch.Tensor) -> torch.Tensor:
    """cos(EPE_i, R_i − O_i) per example and position, ``[example, pos]``, with R and O the
    outputs of the whole first block (LN1, attention, LN2, MLP, both residuals) for
    x = token + position embedding and for the token embedding alone, run *causally* (the
    model's own mask: position i sees positions <= i only). EPE_i is the MLP-only p_i + MLP⁰(p_i)."""
    ad = model.adapter
    ad.require_forward()
    T = ids.shape[1]
    p = _require_learned(ad)[:T]
    with torch.inference_mode():
        epe = p + ad.mlp(0, p)
        R = block0_output(model, ids)
        O = block0_output(model, ids, positions=False)
        return F.cosine_similarity(R - O, epe[None].to(R.dtype), dim=-1)
