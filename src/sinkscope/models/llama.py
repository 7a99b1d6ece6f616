"""Llama-style decoders (HF ``LlamaForCausalLM``, ``Qwen2ForCausalLM``, ``MistralForCausalLM``):
RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention; Qwen2 adds Q/K/V biases
(``has_query_bias`` is read from the loaded parameters, not assumed)."""
from __future__ import annotations

import torch

from .base import ArchInfo, SeparateQKVAdapter


class LlamaAdapter(SeparateQKVAdapter):
    family = "llama"
    model_types = ("llama", "qwen2", "mistral")

    def __init__(self, model):
        super().__init__(model)
        c = self.config
        self.n_layers = c.num_hidden_layers
        self.n_heads = c.num_attention_heads
        self.n_kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        self.d_model = c.hidden_size
        self.d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.body = model.model

    def info(self):
        attn = self.attention_module(0)
        has_bq = getattr(attn.q_proj, "bias", None) is not None
        return ArchInfo(family=self.config.model_type, positional="rotary", norm="rmsnorm", has_query_bias=has_bq, has_mlp=True, qk_norm=False)

    def _rope_args(self, layer):
        return ()

    def rope(self, layer, T, device=None, dtype=torch.float32):
        device = device or self.body.embed_tokens.weight.device
        x = torch.zeros(1, T, 1, device=device, dtype=dtype)  # only its dtype / device are read
        cos, sin = self.body.rotary_emb(x, torch.arange(T, device=device)[None], *self._rope_args(layer))
        return cos[0], sin[0]  # [T, d_head]

    def layers(self):
        return list(self.body.layers)

    def attention_module(self, layer):
        return self.body.layers[layer].self_attn

    def attn_scale(self, layer):
        return float(self.attention_module(layer).scaling)

    def trunk(self):
        return self.body

    def ln1_module(self, layer):
        return self.body.layers[layer].input_layernorm

    def ln2_module(self, layer):
        return self.body.layers[layer].post_attention_layernorm

    def ln_final_module(self):
        return self.body.norm

    def mlp_module(self, layer):
        return self.body.layers[layer].mlp

    def token_embedding_module(self):
        return self.body.embed_tokens
