"""GPT-Neo (HF ``GPTNeoForCausalLM``): separate bias-free Q/K/V ``nn.Linear``, **no** 1/sqrt(d)
scaling of scores, alternating global / local (windowed) attention, learned absolute positions."""
from __future__ import annotations

from .base import ArchInfo, SeparateQKVAdapter
from .gpt2 import TransformerHBlocks


class GPTNeoAdapter(TransformerHBlocks, SeparateQKVAdapter):
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

    def attention_module(self, layer):
        return self.tf.h[layer].attn.attention

    def attn_scale(self, layer):
        return 1.0  # GPT-Neo does not scale q·k
