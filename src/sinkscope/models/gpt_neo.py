"""GPT-Neo (HF ``GPTNeoForCausalLM``): separate bias-free Q/K/V ``nn.Linear``, **no** 1/sqrt(d)
scaling of scores, alternating global / local (windowed) attention, learned absolute positions."""

from __future__ import annotations

import types
from typing import TYPE_CHECKING

import torch

from .base import ArchInfo, SeparateQKVAdapter
from .gpt2 import TransformerHBlocks

if TYPE_CHECKING:
    from contextlib import ExitStack

    from torch import nn


class GPTNeoAdapter(TransformerHBlocks, SeparateQKVAdapter):
    out_proj_name = "out_proj"
    family = "gpt_neo"
    model_types = ("gpt_neo",)
    attention_interface = False  # GPT-Neo calls its own ``_attn``; loaded with eager attention
    attn_implementation = "eager"

    def route_attention(self, stack: ExitStack) -> None:
        """Patch every layer's ``_attn`` with :func:`_captured_attn` until ``stack`` closes."""
        for l in range(self.n_layers):
            mod = self.attention_module(l)
            mod._attn = types.MethodType(_captured_attn, mod)
            stack.callback(mod.__dict__.pop, "_attn", None)

    def __init__(self, model):
        super().__init__(model)
        c = self.config
        self.n_layers = c.num_layers
        self.n_heads = self.n_kv_heads = c.num_heads
        self.d_model = c.hidden_size
        self.d_head = c.hidden_size // c.num_heads
        self.tf = model.transformer

    def info(self) -> ArchInfo:
        return ArchInfo(
            family="gpt_neo",
            positional="learned",
            norm="layernorm",
            has_query_bias=False,
            has_mlp=True,
            qk_norm=False,
        )

    def attention_module(self, layer: int) -> nn.Module:
        return self.tf.h[layer].attn.attention

    def attn_scale(self, layer: int) -> float:
        return 1.0  # GPT-Neo does not scale q·k


def _captured_attn(self, query, key, value, attention_mask=None):
    """Replacement for ``GPTNeoSelfAttention._attn`` while a capture is active (GPT-Neo has no
    attention interface): the same masked softmax attention, through ``attend_and_capture``."""
    from ..metrics.capture import attend_and_capture

    T, S = query.shape[-2], key.shape[-2]
    keep = self.bias[:, :, S - T : S, :S]  # [1, 1, T, S] bool: causal, windowed on local layers
    mask = torch.zeros(keep.shape, dtype=query.dtype, device=query.device).masked_fill_(
        ~keep, torch.finfo(query.dtype).min
    )
    if attention_mask is not None:
        mask = mask + attention_mask
    cap = self._sinkscope_capture
    out, probs, _ = attend_and_capture(
        query, key, value, mask, False, 1.0, cap.keys, force_reference=cap.force_reference
    )
    cap._record(self._sinkscope_layer, probs, query, key)
    return out, None
