"""OPT (HF ``OPTForCausalLM``): Q/K/V/out ``nn.Linear`` with biases, queries scaled by
1/sqrt(d_head) *after* the bias, learned positions with an offset of 2, ReLU MLP in ``fc1``/``fc2``,
pre-LN (most sizes) or post-LN (350m: ``do_layer_norm_before=False``)."""
from __future__ import annotations

import torch
from torch import nn

from .base import Adapter, ArchInfo, linear_heads


class _OPTMLP(nn.Module):
    """View of an OPT layer's ``fc1 -> act -> fc2`` as one module (no norm)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.fc1, self.fc2, self.act = layer.fc1, layer.fc2, layer.activation_fn

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class OPTAdapter(Adapter):
    family = "opt"
    model_types = ("opt",)

    def __init__(self, model):
        super().__init__(model)
        c = self.config
        self.n_layers = c.num_hidden_layers
        self.n_heads = self.n_kv_heads = c.num_attention_heads
        self.d_model = c.hidden_size
        self.d_head = c.hidden_size // c.num_attention_heads
        self.dec = model.model.decoder
        if getattr(self.dec, "project_in", None) is not None:
            # word_embed_proj_dim != hidden_size (opt-350m): token embeddings are projected
            self._projected = True

    def info(self):
        norm = "layernorm" if self.config.do_layer_norm_before else "layernorm-post"
        return ArchInfo("opt", "learned", norm, True, True, False)

    def layers(self):
        return list(self.dec.layers)

    def attention_module(self, layer):
        return self.dec.layers[layer].self_attn

    def attn_scale(self, layer):
        return float(self.attention_module(layer).scaling)

    def trunk(self):
        return self.model.model

    def _lin(self, lin, n):
        w = lin.weight
        return (w if w.is_meta else linear_heads(w, n)), lin.bias

    def _q(self, layer):
        return self._lin(self.attention_module(layer).q_proj, self.n_heads)

    def _k(self, layer):
        return self._lin(self.attention_module(layer).k_proj, self.n_heads)

    def _v(self, layer):
        return self._lin(self.attention_module(layer).v_proj, self.n_heads)

    def _o(self, layer):
        lin = self.attention_module(layer).out_proj
        w = lin.weight
        return (w if w.is_meta else w.T.reshape(self.n_heads, self.d_head, self.d_model)), lin.bias

    def ln1_module(self, layer):
        return self.dec.layers[layer].self_attn_layer_norm

    def ln2_module(self, layer):
        return self.dec.layers[layer].final_layer_norm

    def ln_final_module(self):
        return self.dec.final_layer_norm

    def mlp_module(self, layer):
        return _OPTMLP(self.dec.layers[layer])

    def token_embedding_module(self):
        return self.dec.embed_tokens

    @property
    def W_pos(self) -> torch.Tensor:
        emb = self.dec.embed_positions
        w = emb.weight
        self._need(w, what="the positional embedding")
        return w.detach()[getattr(emb, "offset", 2) :]
