"""OPT (HF ``OPTForCausalLM``): Q/K/V/out ``nn.Linear`` with biases, queries scaled by
1/sqrt(d_head) *after* the bias, learned positions with an offset of 2, ReLU MLP in ``fc1``/``fc2``,
pre-LN (most sizes) or post-LN (350m: ``do_layer_norm_before=False``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .base import ArchInfo, SeparateQKVAdapter

if TYPE_CHECKING:
    from contextlib import ExitStack

    from .base import TensorFn


class _OPTMLP(nn.Module):
    """View of an OPT layer's ``fc1 -> act -> fc2`` as one module (no norm)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.fc1, self.fc2, self.act = layer.fc1, layer.fc2, layer.activation_fn

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class OPTAdapter(SeparateQKVAdapter):
    out_proj_name = "out_proj"
    family = "opt"
    model_types = ("opt",)

    def __init__(self, model):
        super().__init__(model)
        c = self.config
        self.n_layers = c.num_hidden_layers
        self.n_heads = self.n_kv_heads = c.num_attention_heads
        self.d_model = c.hidden_size
        self.d_head = c.hidden_size // c.num_attention_heads
        self.dec = model.model.decoder  # note: opt-350m projects embeddings (project_in/out)

    def info(self) -> ArchInfo:
        norm = "layernorm" if self.config.do_layer_norm_before else "layernorm-post"
        return ArchInfo(
            family="opt",
            positional="learned",
            norm=norm,
            has_query_bias=True,
            has_mlp=True,
            qk_norm=False,
        )

    def layers(self) -> list[nn.Module]:
        return list(self.dec.layers)

    def attention_module(self, layer: int) -> nn.Module:
        return self.dec.layers[layer].self_attn

    def attn_scale(self, layer: int) -> float:
        return float(self.attention_module(layer).scaling)

    def query_prescale(self, layer: int) -> float:
        return float(self.attention_module(layer).scaling)

    def trunk(self) -> nn.Module:
        return self.model.model

    def ln1_module(self, layer: int) -> nn.Module:
        return self.dec.layers[layer].self_attn_layer_norm

    def ln2_module(self, layer: int) -> nn.Module:
        return self.dec.layers[layer].final_layer_norm

    def ln_final_module(self) -> nn.Module:
        return self.dec.final_layer_norm

    def mlp_module(self, layer: int) -> nn.Module:
        return _OPTMLP(self.dec.layers[layer])

    def token_embedding_module(self) -> nn.Module:
        return self.dec.embed_tokens

    def position_embedding_module(self) -> nn.Module:
        return self.dec.embed_positions

    def mlp_output_module(self, layer: int) -> nn.Module:
        return self.dec.layers[layer].fc2

    def hook_mlp_output(self, stack: ExitStack, layer: int, fn: TensorFn) -> None:
        """OPT runs its MLP on ``[batch·pos, d]`` (the block flattens it): ``fn`` sees the
        ``[batch, pos, d]`` view of the block's input shape."""
        block, shape = self.dec.layers[layer], {}

        def remember(mod, args, kwargs):
            shape["x"] = (args[0] if args else kwargs["hidden_states"]).shape

        stack.callback(block.register_forward_pre_hook(remember, with_kwargs=True).remove)
        stack.callback(
            block.fc2.register_forward_hook(
                lambda mod, args, out: fn(out.view(shape["x"])).reshape(out.shape)
            ).remove
        )

    @property
    def W_pos(self) -> torch.Tensor:
        emb = self.dec.embed_positions
        w = emb.weight
        self._need(w, what="the positional embedding")
        return w.detach()[getattr(emb, "offset", 2) :]
