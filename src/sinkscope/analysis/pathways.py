"""The two query-side pathways to index 0, through the same keys (issue 15).

Split every query before rotary embedding as in :mod:`~sinkscope.analysis.shared_query`:
``q_i = R_i q̄ + R_i (q̃_i - q̄)``, with q̄ the *effective query bias* (mean pre-rotary query over
positions 1..T-1). Attention is then recomputed with the model's scale, causal mask and softmax
from one term at a time, over the model's own keys ``k_j``:

=============  ==================================================================================
``full``       scores ``(R_i q̃_i)·k_j``: the model's attention (checked against its own)
``shared``     scores ``(R_i q̄)·k_j``: the source-agnostic route (the same query at every position)
``content``    scores ``R_i (q̃_i - q̄)·k_j``: the content route (what the input adds)
``bq``         scores ``(R_i b_Q)·k_j``: the literal query bias alone (models with one: GPT-2)
=============  ==================================================================================

For each route and (example, layer, head): the mean attention to index 0 over the query window
(each input's second half, the paper metric). A route's **share** is its attention to index 0
over the full query's (ratio of the means over examples): 1 when that term alone puts as much
attention on index 0 as the whole query does. Softmax is not additive, so the shares need not
sum to 1; a route that reaches only the uniform level (:func:`~sinkscope.metrics.uniform_baseline`)
carries none of the sink. One batched pass over all layers and heads; each route's causal softmax
is one fused kernel call (:func:`~sinkscope.metrics.capture.attend_and_capture`), so memory is
O(T) per head, never T×T.

>>> from transformers import GPT2LMHeadModel
>>> from sinkscope.models import SinkModel, adapter_for, tiny
>>> from sinkscope.data import TokenizedInputs, Example
>>> hf = GPT2LMHeadModel(tiny.tiny_config("gpt2")).eval()
>>> r = pathways(SinkModel("m", hf, adapter_for(hf)), TokenizedInputs(torch.arange(48).view(4, 12), [Example("x", "nl")] * 4, {}),
...              progress=False)
>>> r.routes, tuple(r.share("shared").shape), r.full_vs_model < 1e-5  # [layer, head]
(('full', 'shared', 'content', 'bq'), (3, 4), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import SinkscopeError
from ..metrics.capture import attend_and_capture
from ..metrics.sink import key_attention
from .shared_query import kernel_query_bias, kernel_scale, query_key_attention_batches, rotate

if TYPE_CHECKING:
    import pandas as pd

    from ..data import TokenizedInputs
    from ..models import SinkModel

ROUTES = ("full", "shared", "content", "bq")
ROUTE_TEXT = {
    "full": "the whole query (the model's attention)",
    "shared": "the effective query bias q̄ alone (source-agnostic)",
    "content": "the content term q̃_i - q̄ alone",
    "bq": "the literal query bias b_Q alone",
}


@dataclass
class Pathways:
    """Attention to index 0 under each route: ``attn[route] [example, layer, head]`` (mean over
    each input's query window), the model's own (``model_attn``), and the q̄ / b_Q used."""

    attn: dict[str, torch.Tensor]
    model_attn: torch.Tensor  # [example, layer, head] the model's own, captured in the same pass
    q_bar: torch.Tensor  # [layer, head, d_head] (pre-rotary, the kernel's frame)
    b_Q: torch.Tensor | None  # [layer, head, d_head] in the same frame (None: no query bias)

    @property
    def routes(self) -> tuple[str, ...]:
        return tuple(r for r in ROUTES if r in self.attn)

    @property
    def full_vs_model(self) -> float:
        """max |full route - the model's own attention to index 0| over examples, layers, heads."""
        return float((self.attn["full"] - self.model_attn).abs().max())

    def _sel(self, examples):
        return slice(None) if examples is None else examples

    def mean(self, route: str, examples: np.ndarray | None = None) -> torch.Tensor:
        """``[layer, head]``: mean over the selected examples."""
        return self.attn[route][self._sel(examples)].mean(0)

    def share(self, route: str, examples: np.ndarray | None = None) -> torch.Tensor:
        """``[layer, head]``: the route's attention to index 0 over the full query's."""
        return self.mean(route, examples) / self.mean("full", examples)

    def pooled(self, band: tuple[int, int], examples: np.ndarray | None = None) -> dict:
        """Band-level numbers (mean over the band's layers and heads, then the ratio): each
        route's attention to index 0 and its share of the full query's."""
        lo, hi = band
        out = {f"attn_{r}": float(self.mean(r, examples)[lo:hi].mean()) for r in self.routes}
        out |= {
            f"share_{r}": out[f"attn_{r}"] / out["attn_full"] for r in self.routes if r != "full"
        }
        return out | {"full_vs_model_max_abs": self.full_vs_model}

    def frame(self, domains: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
        """Tidy table: one row per domain × layer × head, attention per route and shares."""
        import pandas as pd

        domains = domains or {"all": np.ones(self.model_attn.shape[0], dtype=bool)}
        frames = []
        for dom, sel in domains.items():
            idx = torch.as_tensor(np.nonzero(sel)[0])
            L, H = self.model_attn.shape[1:]
            layer, head = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
            cols = {
                "domain": dom,
                "layer": layer.ravel(),
                "head": head.ravel(),
                "attn_model": self.model_attn[idx].mean(0).flatten().double().numpy(),
            }
            cols |= {f"attn_{r}": self.mean(r, idx).flatten().double().numpy() for r in self.routes}
            cols |= {
                f"share_{r}": self.share(r, idx).flatten().double().numpy()
                for r in self.routes
                if r != "full"
            }
            frames.append(pd.DataFrame(cols))
        return pd.concat(frames, ignore_index=True)


def _route_attention(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Causal-softmax attention to index 0 of already-scaled ``queries`` over ``keys``, both
    ``[batch, layer, head, T, d_head]``: ``[batch, layer, head, T]``."""
    B, L, H, T, dh = queries.shape
    flat = lambda x: x.reshape(B, L * H, T, dh)  # noqa: E731  (all layers' heads in one kernel call)
    _, probs, _ = attend_and_capture(flat(queries), flat(keys), flat(keys), None, True, 1.0, (0,))
    return probs[..., 0].reshape(B, L, H, T)


def pathways(
    model: SinkModel,
    inputs: TokenizedInputs,
    *,
    q_bar: torch.Tensor | None = None,
    batch_size: int = 32,
    progress: bool = True,
    tolerance: float | None = None,
) -> Pathways:
    """Attention to index 0 under each route of :data:`ROUTES` for every example, layer and head.

    ``q_bar``: the run's effective query bias (:class:`~sinkscope.analysis.facts.CircuitFacts`
    ``q_bar``); None computes it here (:func:`~sinkscope.analysis.shared_query.shared_query`,
    one more pass). The full route must reproduce the model's own attention; where it does not
    (within ``tolerance``, default 1e-4 in float32, 1e-2 in reduced precision), the model's
    attention is not a plain causal softmax over these scores (a sliding window shorter than the
    inputs, soft-capping, a learned sink logit) and a :class:`SinkscopeError` says so.
    """
    from .shared_query import shared_query

    ad = model.adapter
    ad.require_forward()
    L = ad.n_layers
    if q_bar is None:
        q_bar = shared_query(model, inputs, batch_size=batch_size, progress=progress).q_bar
    b_Q = kernel_query_bias(ad)
    scale = kernel_scale(ad).float()[None, :, None, None, None]  # [1, layer, 1, 1, 1]
    routes = {r: [] for r in ROUTES if r != "bq" or b_Q is not None}
    own = []
    batches = query_key_attention_batches(
        model, inputs, batch_size=batch_size, progress=progress, desc="pathways"
    )
    for start, qk, ropes, attn0 in batches:
        B, _, T, _ = qk[0][0].shape
        dev = qk[0][0].device
        lengths = inputs.lengths[start : start + B] if inputs.ragged else None
        k = torch.stack(
            [qk[l][1] for l in range(L)], 1
        )  # [batch, layer, head, T, d_head] (rotated keys)
        terms = {"full": torch.stack([qk[l][0] for l in range(L)], 1)}  # pre-rotary queries
        qb = q_bar.to(dev, torch.float32)[None, :, :, None, :]  # [1, layer, head, 1, d_head]
        terms["shared"] = qb.expand_as(terms["full"])
        terms["content"] = terms["full"] - qb
        if b_Q is not None:
            terms["bq"] = b_Q.to(dev, torch.float32)[None, :, :, None, :].expand_as(terms["full"])

        def rotated(
            x,
        ):  # R_i x_i per layer (layers can rotate differently: Gemma-3's sliding layers)
            return torch.stack(
                [
                    rotate(x[:, l], None if ropes[l] is None else ropes[l].to(x.dtype))
                    for l in range(L)
                ],
                1,
            )

        for r in routes:
            a = _route_attention(rotated(terms[r]) * scale.to(dev), k)  # [batch, layer, head, T]
            routes[r].append(key_attention(a[..., None], 0, lengths=lengths).cpu())
        own.append(key_attention(attn0.float()[..., None], 0, lengths=lengths).cpu())
    res = Pathways(
        {r: torch.cat(v) for r, v in routes.items()}, torch.cat(own), q_bar.double().cpu(), b_Q
    )
    if tolerance is None:
        tolerance = (
            1e-4 if next(ad.model.parameters()).dtype in (torch.float32, torch.float64) else 1e-2
        )
    if not res.full_vs_model <= tolerance:
        raise SinkscopeError(
            f"the pathways recompute plain causal softmax attention, and on {model.name} that differs from the "
            f"model's own by up to {res.full_vs_model:.2g} (a sliding window shorter than the inputs, soft-capping "
            "or a sink logit); use inputs shorter than its attention window, or a model without these"
        )
    return res
