"""GPT-2 (HF ``GPT2LMHeadModel``): fused Conv1D ``c_attn`` ``[d, 3d]`` holding Q | K | V, learned
absolute positions ``wpe``, LayerNorm with bias, GELU MLP, query/key/value biases."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .base import Adapter, ArchInfo

if TYPE_CHECKING:
    from torch import nn


class TransformerHBlocks:
    """Module layout shared by GPT-2 and GPT-Neo: ``transformer.{wte, wpe, h[l].{ln_1, ln_2, mlp}, ln_f}``."""

    tf: object

    def layers(self) -> list[nn.Module]:
        return list(self.tf.h)

    def trunk(self) -> nn.Module:
        return self.tf

    def ln1_module(self, layer: int) -> nn.Module:
        return self.tf.h[layer].ln_1

    def ln2_module(self, layer: int) -> nn.Module:
        return self.tf.h[layer].ln_2

    def ln_final_module(self) -> nn.Module:
        return self.tf.ln_f

    def mlp_module(self, layer: int) -> nn.Module:
        return self.tf.h[layer].mlp

    def token_embedding_module(self) -> nn.Module:
        return self.tf.wte

    def position_embedding_module(self) -> nn.Module:
        return self.tf.wpe

    @property
    def W_pos(self) -> torch.Tensor:
        w = self.tf.wpe.weight
        self._need(w, what="the positional embedding")
        return w.detach()


class GPT2Adapter(TransformerHBlocks, Adapter):
    family = "gpt2"
    model_types = ("gpt2",)

    def __init__(self, model):
        super().__init__(model)
        c = self.config
        self.n_layers = c.n_layer
        self.n_heads = self.n_kv_heads = c.n_head
        self.d_model = c.n_embd
        self.d_head = c.n_embd // c.n_head
        self.tf = model.transformer

    def info(self) -> ArchInfo:
        return ArchInfo(
            family="gpt2",
            positional="learned",
            norm="layernorm",
            has_query_bias=True,
            has_mlp=True,
            qk_norm=False,
        )

    def attention_module(self, layer: int) -> nn.Module:
        return self.tf.h[layer].attn

    def attn_scale(self, layer: int) -> float:
        a = self.tf.h[layer].attn
        return float(a.scaling)

    def _qkv(self, layer: int, which: int):
        attn = self.tf.h[layer].attn
        w, b = attn.c_attn.weight, attn.c_attn.bias  # [d, 3d], [3d] (Conv1D: x @ w + b)
        assert w.shape == (self.d_model, 3 * self.d_model), w.shape
        d, H, dh = self.d_model, self.n_heads, self.d_head
        if w.is_meta or b.is_meta:
            return w, b  # _checked reports the missing name
        ws = w[:, which * d : (which + 1) * d].reshape(d, H, dh).permute(1, 0, 2)  # [H, d, dh]
        bs = b[which * d : (which + 1) * d].reshape(H, dh)  # [H, dh]
        return ws, bs

    def _q(self, layer):
        return self._qkv(layer, 0)

    def _k(self, layer):
        return self._qkv(layer, 1)

    def _v(self, layer):
        return self._qkv(layer, 2)

    def _o(self, layer):
        proj = self.tf.h[layer].attn.c_proj  # Conv1D [d, d]
        w = proj.weight
        if w.is_meta:
            return w, proj.bias
        return w.reshape(self.n_heads, self.d_head, self.d_model), proj.bias

    def query_bias_view(self, layer: int) -> torch.Tensor:
        return (
            self.tf.h[layer].attn.c_attn.bias.data[: self.d_model].view(self.n_heads, self.d_head)
        )

    def key_weight_view(self, layer: int) -> torch.Tensor:
        return self.tf.h[layer].attn.c_attn.weight.data[
            :, self.d_model : 2 * self.d_model
        ]  # Conv1D [in, out]
