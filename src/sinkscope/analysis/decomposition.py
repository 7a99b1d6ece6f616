"""The four-term decomposition of a pre-softmax score (paper: "Structural analysis").

With ``x`` the LN1 output of a layer, the unscaled score of query ``i`` on key ``j`` in head ``h`` is

    (x_i W_Q + b_Q)·(x_j W_K + b_K) = x_i W_Q W_Kᵀ x_j   content
                                    + x_i W_Q b_K      query-only (constant over j: cancels)
                                    + b_Q W_Kᵀ x_j     Δ_j, source-agnostic (same for every query)
                                    + b_Q b_K          constant (cancels)

Δ_j = b_Q,h · (W_K,h x_j) = Σ_d x_j[d] γ_h[d] with γ_h = W_K,h b_Q,h (see ``alignment.gamma``).
Defined for un-rotated queries and keys (learned / no positions, no QK-norm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..errors import SinkscopeError
from ..metrics import KeyAttentionCapture
from .alignment import gamma
from .residual import on_block_inputs

if TYPE_CHECKING:
    from ..data import TokenizedInputs
    from ..models import Adapter, SinkModel


def require_unrotated(adapter: Adapter) -> None:
    info = adapter.info()
    if info.positional == "rotary" or info.qk_norm:
        what = "rotary positions" if info.positional == "rotary" else "QK-norm"
        raise SinkscopeError(
            f"the four-term score decomposition needs un-rotated queries and keys, but {info.family} uses {what}; "
            "use a learned-position model (GPT-2, GPT-Neo, OPT)"
        )


@dataclass
class ScoreTerms:
    """The four terms and the model's own unscaled scores for one batch."""

    content: torch.Tensor  # [batch, layer, head, q_pos, k_pos]
    query_only: torch.Tensor  # [batch, layer, head, q_pos]   (constant over keys)
    delta: torch.Tensor  # [batch, layer, head, k_pos]        (constant over queries)
    const: torch.Tensor  # [layer, head]
    scores: torch.Tensor  # [batch, layer, head, q_pos, k_pos]  q·k as the model computed it

    def total(self) -> torch.Tensor:
        """Sum of the four terms, ``[batch, layer, head, q_pos, k_pos]``."""
        return (
            self.content
            + self.query_only[..., :, None]
            + self.delta[..., None, :]
            + self.const[None, :, :, None, None]
        )


def _ln1_inputs(model, ids):
    ad = model.adapter
    xs: dict[int, torch.Tensor] = {}
    with (
        torch.inference_mode(),
        on_block_inputs(ad, lambda l, r: xs.__setitem__(l, ad.ln1(l, r))),
        KeyAttentionCapture(ad, (0,), record_qk=True) as cap,
    ):
        ad.trunk()(input_ids=ids.to(model.device), use_cache=False)
    return torch.stack([xs[l] for l in range(ad.n_layers)], 1), cap  # [batch, layer, pos, d_model]


def score_terms(model: SinkModel, ids: torch.Tensor) -> ScoreTerms:
    """Decompose every (example, layer, head, query, key) score of a batch of token ids."""
    ad = model.adapter
    require_unrotated(ad)
    ad.require_forward()
    x, cap = _ln1_inputs(model, ids)
    W_Q, b_Q, W_K, b_K = ad.W_Q, ad.b_Q, ad.W_K, ad.b_K
    q0 = torch.einsum("blpd,lhde->blhpe", x, W_Q)  # x_i W_Q   [batch, layer, head, pos, d_head]
    k0 = torch.einsum("blpd,lhde->blhpe", x, W_K)  # x_j W_K
    prescale = torch.tensor([ad.query_prescale(l) for l in range(ad.n_layers)], dtype=x.dtype)
    return ScoreTerms(
        content=q0 @ k0.transpose(-1, -2),
        query_only=torch.einsum("blhpe,lhe->blhp", q0, b_K),
        delta=torch.einsum("blhpe,lhe->blhp", k0, b_Q),
        const=torch.einsum("lhe,lhe->lh", b_Q, b_K),
        scores=cap.scores() / prescale[None, :, None, None, None],
    )


def source_agnostic_shift(
    model: SinkModel, inputs: TokenizedInputs, *, batch_size: int = 32, progress: bool = True
) -> torch.Tensor:
    """Δ for every input: ``[example, layer, head, k_pos]`` (no 1/√d, no b_K), batched.

    Positions past an input's length (ragged inputs) are NaN.
    """
    ad = model.adapter
    require_unrotated(ad)
    ad.require_forward()
    g = gamma(ad)  # [layer, head, d_model]
    trunk = ad.trunk()
    out = []
    for start in tqdm(
        range(0, len(inputs), batch_size), desc="Δ per key", unit="batch", disable=not progress
    ):
        ids = inputs.ids[start : start + batch_size].to(model.device)
        buf: dict[int, torch.Tensor] = {}
        hook = lambda l, r: buf.__setitem__(l, torch.einsum("bpd,hd->bhp", ad.ln1(l, r), g[l]))  # noqa: E731
        with torch.inference_mode(), on_block_inputs(ad, hook):
            trunk(input_ids=ids, use_cache=False)
        out.append(torch.stack([buf[l] for l in range(ad.n_layers)], 1).cpu())
    delta = torch.cat(out)
    if inputs.ragged:
        pos = torch.arange(delta.shape[-1])
        delta = delta.masked_fill(
            (pos[None, :] >= inputs.lengths[:, None])[:, None, None, :], float("nan")
        )
    return delta


def recenter(delta: torch.Tensor) -> torch.Tensor:
    """Shift Δ per (example, layer, head) so that its minimum over positions is 0 (NaN-aware)."""
    lo = torch.where(torch.isnan(delta), torch.full_like(delta, float("inf")), delta).amin(
        -1, keepdim=True
    )
    return delta - lo


DELTA_STD = "population std (ddof=0), as the paper's np.std"  # the std column of delta_percentiles


def delta_percentiles(
    delta_rc: torch.Tensor, layers: range | None = None, ddof: int = 0
) -> pd.DataFrame:
    """Per layer and position: p10 / p50 / p90 / mean / std of re-centred Δ over examples × heads
    (``std``: the population std, :data:`DELTA_STD`; ``ddof=1`` gives the sample std)."""
    d = delta_rc.double().numpy()  # [example, layer, head, pos]
    layers = range(d.shape[1]) if layers is None else layers
    rows = []
    for layer in layers:
        v = d[:, layer].reshape(-1, d.shape[-1])  # [(example, head), pos]
        p10, p50, p90 = np.nanpercentile(v, [10, 50, 90], axis=0)
        mean, std, n = np.nanmean(v, 0), np.nanstd(v, 0, ddof=ddof), (~np.isnan(v)).sum(0)
        for pos in range(v.shape[1]):
            rows.append(
                {
                    "layer": layer,
                    "position": pos,
                    "p10": p10[pos],
                    "p50": p50[pos],
                    "p90": p90[pos],
                    "mean": mean[pos],
                    "std": std[pos],
                    "n": int(n[pos]),
                }
            )
    return pd.DataFrame(rows)


def separation(table: pd.DataFrame) -> pd.DataFrame:
    """Per layer: index 0's p10 / median against the largest p90 of any other position."""
    rows = []
    for layer, t in table.groupby("layer"):
        first, rest = t[t.position == 0].iloc[0], t[t.position > 0]
        rows.append(
            {
                "layer": int(layer),
                "index0_p10": first.p10,
                "index0_median": first.p50,
                "index0_mean": first["mean"],
                "max_other_p90": rest.p90.max(),
                "other_mean": float(np.average(rest["mean"], weights=rest.n)),
                "index0_p10_above_all_other_p90": bool(first.p10 > rest.p90.max()),
            }
        )
    return pd.DataFrame(rows)
