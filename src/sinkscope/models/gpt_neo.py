"""GPT-Neo (HF ``GPTNeoForCausalLM``): separate bias-free Q/K/V ``nn.Linear``, **no** 1/sqrt(d)
scaling of scores, alternating global / local (windowed) attention, learned absolute positions."""
from __future__ import annotations

import torch

from .base import ArchInfo, SeparateQKVAdapter


class GPTNeoAdapter(SeparateQKVAdapter):
    out_proj_name = "out_proj"
    family = "gpt_neo"
    model_types = ("gpt_neo",)

    def __init__(self, model):
        super().__init__(model)
        c = self.config
        self.n_layers = c.num_layers
        self.n_heads = self.n_kv_heads = c.num_heads
        self.d_model = c.hidden_size
        self.d_head = c.hidden_size // c.num_heads
        self.tf = model.transformer

    def info(self):
        return ArchInfo("gpt_neo", "learned", "layernorm", False, True, False)

    def layers(self):
        return list(self.tf.h)

    def attention_module(self, layer):
        return self.tf.h[layer].attn.attention

    def attn_scale(self, layer):
        return 1.0  # GPT-Neo does not scale q·k

    def trunk(self):
        return self.tf

    def ln1_module(self, layer):
        return self.tf.h[layer].ln_1

    def ln2_module(self, layer):
        return self.tf.h[layer].ln_2

    def ln_final_module(self):
        return self.tf.ln_f

    def mlp_module(self, layer):
        return self.tf.h[layer].mlp

    def token_embedding_module(self):
        return self.tf.wte

    def position_embedding_module(self):
        return self.tf.wpe

    @property
    def W_pos(self) -> torch.Tensor:
        w = self.tf.wpe.weight
        self._need(w, what="the positional embedding")
        return w.detach()
