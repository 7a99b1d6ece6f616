"""The generalised source-agnostic shift: the *effective query bias* of every head.

GPT-2 has a literal query bias b_Q; Llama-style models do not, and with RoPE a query's direction
also depends on its position. For any model, split each query before rotary embedding into the
part shared by all positions and the rest::

    q_i = R_i q̄ + R_i (q̃_i - q̄)        q̃_i: pre-rotary query, q̄ = mean of q̃ over positions 1..T-1

(``R_i`` = the rotation to position i; identity without RoPE). Index 0's logit advantage for
query i is ``adv_i = q_i·(k_0 - mean_{1<=j<=i} k_j)``; the shared part's advantage is
``(R_i q̄)·(k_0 - mean k_j) = q̄ · R_iᵀ c_i``, so one pass accumulates ``Σ q_i·c_i`` and
``Σ R_iᵀ c_i`` and the share is their ratio. On GPT-2-shaped models q̄ = b_Q + W_Q·mean(LN(x)),
i.e. the literal b_Q term plus a data term (tested); the literal b_Q share is reported beside it.

>>> from transformers import GPT2Config, GPT2LMHeadModel
>>> from sinkscope.models import SinkModel, adapter_for
>>> from sinkscope.data import TokenizedInputs, Example
>>> torch.manual_seed(0); hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4)).eval()
<torch._C.Generator object at ...>
>>> ti = TokenizedInputs(torch.randint(0, 100, (4, 12)), [Example("x", "nl")] * 4, {})
>>> r = shared_query(SinkModel("m", hf, adapter_for(hf)), ti, progress=False)
>>> tuple(r.q_bar.shape), tuple(r.share().shape)  # [layer, head, d_head], [layer, head]
((2, 4, 8), (2, 4))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from ..metrics import KeyAttentionCapture
from ..metrics.sink import query_window

if TYPE_CHECKING:
    from typing import Iterator

    import pandas as pd

    from ..data import TokenizedInputs
    from ..models import Adapter, SinkModel
    from ..models.rotary import Rotary


def unrotate(x: torch.Tensor, rope: Rotary | None) -> torch.Tensor:
    """``R_iᵀ x_i`` for ``x [..., T, d_head]`` (identity when ``rope`` is None): the rotation by
    the opposite angles."""
    return x if rope is None else rope.apply(x, inverse=True)


def rotate(x: torch.Tensor, rope: Rotary | None) -> torch.Tensor:
    """``R_i x_i`` (identity when ``rope`` is None)."""
    return x if rope is None else rope.apply(x)


def _window_mask(T: int, lengths: torch.Tensor | None, B: int) -> torch.Tensor:
    """``[batch, pos]`` True on each input's query window (its second half)."""
    pos = torch.arange(T)[None, :]
    if lengths is None:
        w = query_window(T)
        return ((pos >= w.start) & (pos < w.stop)).expand(B, T)
    return (pos >= (lengths // 2)[:, None]) & (pos < lengths[:, None])


@dataclass
class SharedQuery:
    """Per-example sums from one pass; every ratio is formed from them."""

    q_bar: torch.Tensor  # [layer, head, d_head] effective query bias (pre-rotary, kernel's frame)
    adv: (
        torch.Tensor
    )  # [example, layer, head] Σ_i q_i·c_i (unscaled logits, summed over the window)
    contrast: torch.Tensor  # [example, layer, head, d_head] Σ_i R_iᵀ c_i
    n_queries: torch.Tensor  # [example] window size
    b_Q: (
        torch.Tensor | None
    )  # [layer, head, d_head] literal query bias in the same frame (None: none)
    scale: torch.Tensor  # [layer] softmax scale applied to the kernel's q·k

    def _sel(self, examples):
        return slice(None) if examples is None else examples

    def share(self, examples: np.ndarray | None = None) -> torch.Tensor:
        """``[layer, head]``: Σ shared advantage / Σ advantage over the selected examples."""
        s = self._sel(examples)
        shared = torch.einsum("lhe,nlhe->lh", self.q_bar, self.contrast[s])
        return shared / self.adv[s].sum(0)

    def bq_share(self, examples: np.ndarray | None = None) -> torch.Tensor | None:
        """The literal b_Q term's share, ``[layer, head]`` (None without a query bias)."""
        if self.b_Q is None:
            return None
        s = self._sel(examples)
        return torch.einsum("lhe,nlhe->lh", self.b_Q, self.contrast[s]) / self.adv[s].sum(0)

    def advantage(self, examples: np.ndarray | None = None) -> torch.Tensor:
        """Mean scaled logit advantage of index 0 per query, ``[layer, head]``."""
        s = self._sel(examples)
        return self.adv[s].sum(0) / self.n_queries[s].sum() * self.scale[:, None]

    def pooled(self, band: tuple[int, int], examples: np.ndarray | None = None) -> dict:
        """Band-level numbers: shares pooled over the band's heads (Σ shared / Σ advantage)."""
        s = self._sel(examples)
        lo, hi = band
        adv = self.adv[s][:, lo:hi].sum()
        out = {
            "shared_query_share": float(
                torch.einsum("lhe,nlhe->", self.q_bar[lo:hi], self.contrast[s][:, lo:hi]) / adv
            ),
            "mean_advantage": float(
                (self.adv[s][:, lo:hi].sum(0) * self.scale[lo:hi, None]).mean()
                / self.n_queries[s].sum()
            ),
        }
        out["bq_share"] = (
            float(torch.einsum("lhe,nlhe->", self.b_Q[lo:hi], self.contrast[s][:, lo:hi]) / adv)
            if self.b_Q is not None
            else float("nan")
        )
        return out

    def frame(self, domains: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
        """Tidy per (domain, layer, head) table."""
        import pandas as pd

        domains = domains or {"all": np.ones(self.adv.shape[0], dtype=bool)}
        rows = []
        for dom, sel in domains.items():
            idx = torch.as_tensor(np.nonzero(sel)[0])
            sh, adv = self.share(idx), self.advantage(idx)
            bq = self.bq_share(idx)
            L, H = sh.shape
            for l in range(L):
                for h in range(H):
                    rows.append(
                        {
                            "domain": dom,
                            "layer": l,
                            "head": h,
                            "index0_advantage": float(adv[l, h]),
                            "shared_query_share": float(sh[l, h]),
                            "bq_share": float(bq[l, h]) if bq is not None else float("nan"),
                        }
                    )
        return pd.DataFrame(rows)


def query_key_batches(
    model: SinkModel,
    inputs: TokenizedInputs,
    *,
    batch_size: int = 32,
    progress: bool = True,
    desc: str = "queries and keys",
) -> Iterator[tuple[int, dict[int, tuple[torch.Tensor, torch.Tensor]], list[Rotary | None]]]:
    """Yield ``(start, {layer: (q_pre [B,H,T,dh], k [B,H,T,dh])}, ropes)`` per batch: the kernel's
    keys (rotated, GQA-repeated) and its queries rotated back to pre-RoPE."""
    for start, out, ropes, _ in query_key_attention_batches(
        model, inputs, batch_size=batch_size, progress=progress, desc=desc
    ):
        yield start, out, ropes


def query_key_attention_batches(
    model: SinkModel,
    inputs: TokenizedInputs,
    *,
    batch_size: int = 32,
    progress: bool = True,
    desc: str = "queries and keys",
) -> Iterator[
    tuple[int, dict[int, tuple[torch.Tensor, torch.Tensor]], list[Rotary | None], torch.Tensor]
]:
    """:func:`query_key_batches` plus the model's own attention to index 0 in the same pass:
    ``(start, qk, ropes, attn0 [B, layer, head, T])``."""
    ad = model.adapter
    ad.require_forward()
    trunk = ad.trunk()
    ropes = None
    for start in tqdm(
        range(0, len(inputs), batch_size), desc=desc, unit="batch", disable=not progress
    ):
        ids = inputs.ids[start : start + batch_size].to(model.device)
        T = ids.shape[1]
        if ropes is None or ropes[0] is not None and ropes[0].T != T:
            ropes = [ad.rope(l, T, device=model.device) for l in range(ad.n_layers)]
        with torch.inference_mode(), KeyAttentionCapture(ad, (0,), record_qk=True) as cap:
            trunk(input_ids=ids, use_cache=False)
        out = {}
        for l in range(ad.n_layers):
            q, k = cap.qk[l]
            if k.shape[1] != q.shape[1]:
                k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            rope = None if ropes[l] is None else ropes[l].to(q.dtype)
            out[l] = (unrotate(q.float(), rope), k.float())
        yield start, out, ropes, cap.stacked()[..., 0]


def shared_query(
    model: SinkModel, inputs: TokenizedInputs, *, batch_size: int = 32, progress: bool = True
) -> SharedQuery:
    """Effective query bias and index 0's logit advantage, shared vs total, for every head."""
    ad = model.adapter
    L, H, dh = ad.n_layers, ad.n_heads, ad.d_head
    q_sum = torch.zeros(L, H, dh, dtype=torch.float64)
    q_n = 0
    advs, contrasts, nq = [], [], []
    for start, qk, ropes in query_key_batches(
        model, inputs, batch_size=batch_size, progress=progress, desc="shared query"
    ):
        any_q = qk[0][0]
        B, _, T, _ = any_q.shape
        lengths = inputs.lengths[start : start + B] if inputs.ragged else None
        win = _window_mask(T, lengths, B).to(any_q.device)  # [batch, pos]
        valid = (
            (torch.arange(T)[None, :] < (lengths[:, None] if lengths is not None else T))
            .expand(B, T)
            .clone()
            .to(any_q.device)
        )
        valid[:, 0] = False  # q̄ is the mean over the non-first positions
        adv_b = torch.zeros(B, L, H, dtype=torch.float64)
        con_b = torch.zeros(B, L, H, dh, dtype=torch.float64)
        for l in range(L):
            q_pre, k = qk[l]  # [batch, head, pos, d_head]
            rope = None if ropes[l] is None else ropes[l].to(k.dtype)
            q_sum[l] += (q_pre.double() * valid[:, None, :, None]).sum((0, 2)).cpu()
            q = rotate(q_pre, rope)
            cum = (
                torch.cumsum(k[:, :, 1:].double(), dim=2)
                / torch.arange(1, T, device=k.device, dtype=torch.float64)[:, None]
            )
            c = torch.zeros_like(k, dtype=torch.float64)
            c[:, :, 1:] = (
                k[:, :, :1].double() - cum
            )  # c_i = k_0 - mean_{1<=j<=i} k_j   [batch, head, pos, d_head]
            w = win[:, None, :, None].double()
            adv_b[:, l] = ((q.double() * c) * w).sum((-1, -2)).cpu()
            cr = unrotate(c, None if rope is None else rope.to(torch.float64))
            con_b[:, l] = (cr * w).sum(2).cpu()
        q_n += int(valid.sum())
        advs.append(adv_b)
        contrasts.append(con_b)
        nq.append(win.sum(1).cpu())
    return SharedQuery(
        q_bar=q_sum / q_n,
        adv=torch.cat(advs),
        contrast=torch.cat(contrasts),
        n_queries=torch.cat(nq).double(),
        b_Q=kernel_query_bias(ad),
        scale=kernel_scale(ad),
    )


def kernel_query_bias(adapter: Adapter) -> torch.Tensor | None:
    """The literal query bias in the frame of the queries the attention kernel sees
    (``[layer, head, d_head]``, float64, on the CPU), or None when the model has none."""
    if not adapter.info().has_query_bias:
        return None
    prescale = torch.tensor(
        [adapter.query_prescale(l) for l in range(adapter.n_layers)], dtype=torch.float64
    )
    return adapter.b_Q.double().cpu() * prescale[:, None, None]


def kernel_scale(adapter: Adapter) -> torch.Tensor:
    """``[layer]`` (float64): the factor the attention kernel applies to its own ``q·k``."""
    return torch.tensor(
        [adapter.attn_scale(l) / adapter.query_prescale(l) for l in range(adapter.n_layers)],
        dtype=torch.float64,
    )


def shared_gamma(model: SinkModel, q_bar: torch.Tensor, T: int) -> torch.Tensor:
    """γ with the effective query bias in place of b_Q: ``[layer, head, d_model]``, the weight of
    residual coordinate d (after ln1) in the shared query's score on index 0, averaged over the
    query window (index 0's key is not rotated, so ``(R_i q̄)·W_K[d]``)."""
    ad = model.adapter
    W_K = ad.W_K.double()  # [layer, head, d_model, d_head]
    out = []
    win = query_window(T)
    for l in range(ad.n_layers):
        rope = ad.rope(l, T, device=torch.device("cpu"))
        qb = q_bar[l].double()[:, None, :].expand(-1, T, -1)  # [head, pos, d_head]
        qr = rotate(qb, None if rope is None else rope.to(torch.float64))[:, win].mean(
            1
        )  # [head, d_head]
        out.append(torch.einsum("he,hde->hd", qr / ad.query_prescale(l), W_K[l]))
    return torch.stack(out)
