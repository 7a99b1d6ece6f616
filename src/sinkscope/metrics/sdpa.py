"""Scaled dot-product attention that also returns each query's log-sum-exp: the fused kernels
that compute it anyway (CPU flash attention, CUDA memory-efficient attention), else an exact
chunked reference in float32 or wider (and the only path for a logit softcap)."""

from __future__ import annotations

import torch


def sdpa_with_lse(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    scale: float,
    *,
    force_reference: bool = False,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out [B, H, T, D], lse [B, H, T])`` for softmax(scale·QKᵀ + mask)·V.

    Uses the fused kernels that already compute the log-sum-exp (CPU flash attention; CUDA
    memory-efficient attention); ``force_reference`` (or any other device) computes it
    chunk-wise from explicit scores (in float32 at least), as it must for ``softcap`` (which no
    fused kernel applies). ``lse`` is float32 or wider whatever the inputs' dtype.
    """
    force_reference = force_reference or bool(softcap)
    if (
        not force_reference
        and query.device.type == "cpu"
        and query.dtype in (torch.float32, torch.float64, torch.bfloat16)
    ):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, 0.0, is_causal, attn_mask=mask, scale=scale
        )
        return out, lse
    if not force_reference and query.device.type == "cuda":
        bias = (
            mask.expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
            if mask is not None
            else None
        )
        try:
            out, lse, _, _ = torch.ops.aten._scaled_dot_product_efficient_attention(
                query, key, value, bias, True, 0.0, is_causal, scale=scale
            )
            return out, lse[..., : query.shape[2]]
        except RuntimeError:  # unsupported dtype / head size / alignment: use the exact fallback
            pass
    T, S = query.shape[2], key.shape[2]
    acc = torch.promote_types(query.dtype, torch.float32)  # reduced precision: scores in fp32
    k_t, v = key.to(acc).transpose(-1, -2), value.to(acc)
    outs, lses = [], []
    for start in range(0, T, 256):  # chunk over queries: never more than [B, H, 256, S] scores
        q = query[:, :, start : start + 256].to(acc)
        s = softcapped(scale * (q @ k_t), softcap)
        if mask is not None:
            s = s + mask[..., start : start + 256, :].to(acc)
        if is_causal:
            qi = torch.arange(start, start + q.shape[2], device=q.device)[:, None]
            s = s.masked_fill(
                torch.arange(S, device=q.device)[None, :] > qi + (S - T), float("-inf")
            )
        lse = torch.logsumexp(s, dim=-1)
        outs.append((torch.exp(s - lse[..., None]) @ v).to(query.dtype))
        lses.append(lse)
    return torch.cat(outs, 2), torch.cat(lses, 2)


def softcapped(scores: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """Gemma-2's logit soft-capping ``c·tanh(s / c)`` (identity without a cap)."""
    return scores if not softcap else softcap * torch.tanh(scores / softcap)
