"""Gemma 3 text decoders (HF ``Gemma3ForCausalLM``): RMSNorm with (1 + w) gain, QK-norm
(per-head RMSNorm on queries and keys before RoPE), sandwich norms around attention and MLP,
sqrt(d)-scaled token embeddings, ``query_pre_attn_scalar`` score scaling, sliding-window layers."""
from __future__ import annotations

from .llama import LlamaAdapter
from .base import ArchInfo


class Gemma3Adapter(LlamaAdapter):
    family = "gemma3"
    model_types = ("gemma3_text",)

    def __init__(self, model):
        super().__init__(model)
        self.d_head = self.config.head_dim

    def info(self):
        attn = self.attention_module(0)
        has_bq = getattr(attn.q_proj, "bias", None) is not None
        return ArchInfo(family="gemma3", positional="rotary", norm="rmsnorm", has_query_bias=has_bq, has_mlp=True, qk_norm=True)

    def _rope_args(self, layer):
        return (self.config.layer_types[layer],)  # sliding and full layers use different RoPE bases

    def ln2_module(self, layer):
        return self.body.layers[layer].pre_feedforward_layernorm

    def q_norm_module(self, layer):
        return self.attention_module(layer).q_norm

    def k_norm_module(self, layer):
        return self.attention_module(layer).k_norm
