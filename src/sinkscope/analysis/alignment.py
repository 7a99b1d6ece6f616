"""Query-bias / key alignment (paper Figs 2, 4, 8).

γ_h[d] = b_Q,h · W_K,h[d, :]: the weight of residual coordinate ``d`` in head ``h``'s
source-agnostic shift Δ. Needs only attention weights, so it runs on partial checkpoints.

>>> from transformers import GPT2Config, GPT2LMHeadModel
>>> from sinkscope.models import adapter_for
>>> tuple(gamma(adapter_for(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2)))).shape)
(2, 2, 16)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from typing import Sequence

    from ..models import Adapter


def gamma(adapter: Adapter) -> torch.Tensor:
    """``[layer, head, d_model]``: one batched contraction of b_Q with W_K over all layers and heads."""
    return torch.einsum("lhe,lhde->lhd", adapter.b_Q, adapter.W_K)


def _stats(v: np.ndarray) -> dict:
    return {"mean": float(v.mean()), "median": float(np.median(v)), "count": int(v.size)}


def gamma_split(
    g: torch.Tensor, coords: Sequence[int], band: tuple[int, int]
) -> tuple[dict, pd.DataFrame]:
    """|γ| on the massive ``coords`` vs the other coordinates, layers ``band`` × all heads.

    Returns the summary block and a tidy table (layer, head, coord, gamma, abs_gamma, massive).
    """
    sub = g[band[0] : band[1]].double()  # [layer, head, d_model]
    L, H, D = sub.shape
    bad = [c for c in coords if not 0 <= c < D]
    if bad:
        from ..errors import SinkscopeError

        raise SinkscopeError(f"--coords {bad} are outside the residual stream (0..{D - 1})")
    mask = torch.zeros(D, dtype=torch.bool)
    mask[list(coords)] = True
    a = sub.abs()
    summary = {
        "massive": _stats(a[..., mask].flatten().numpy()),
        "other": _stats(a[..., ~mask].flatten().numpy()),
        "coords": [int(c) for c in coords],
        "layers": [int(band[0]), int(band[1])],
    }
    other = summary["other"]["mean"]
    summary["ratio_of_means"] = summary["massive"]["mean"] / other if other else float("nan")
    layer, head, coord = np.meshgrid(
        np.arange(band[0], band[1]), np.arange(H), np.arange(D), indexing="ij"
    )
    table = pd.DataFrame(
        {
            "layer": layer.ravel(),
            "head": head.ravel(),
            "coord": coord.ravel(),
            "gamma": sub.flatten().numpy(),
            "massive": mask[coord.ravel()].numpy(),
        }
    )
    table["abs_gamma"] = table["gamma"].abs()
    return summary, table


def bq_key_alignment(adapter: Adapter, epe: torch.Tensor, band: tuple[int, int]) -> torch.Tensor:
    """cos(b_Q,h, W_K,h·EPE_j) for layers in ``band``: ``[layer, head, pos]``."""
    W_K = adapter.W_K[band[0] : band[1]]  # [layer, head, d_model, d_head]
    b_Q = adapter.b_Q[band[0] : band[1]]  # [layer, head, d_head]
    keys = torch.einsum("td,lhde->lhte", epe, W_K)  # [layer, head, pos, d_head]
    return F.cosine_similarity(keys, b_Q[:, :, None, :].expand_as(keys), dim=-1)
