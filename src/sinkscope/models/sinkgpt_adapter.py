"""The adapter of sinkscope's trainable GPT (:mod:`.sinkgpt`): GPT-2's, with the components a
variant switches off (query bias, learned positions, MLP) reported as absent and its rotary
positions given to the analyses."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .base import ArchInfo, Rotary
from .gpt2 import GPT2Adapter
from .sinkgpt import rope_cos_sin

if TYPE_CHECKING:
    from torch import nn


class SinkGPTAdapter(GPT2Adapter):
    """GPT-2's adapter, with the components a variant switched off reported as absent."""

    family = "sinkscope_gpt"
    model_types = ("sinkscope_gpt",)

    def info(self) -> ArchInfo:
        c = self.config
        return ArchInfo(
            family="sinkscope_gpt",
            positional=c.positions,
            norm="layernorm",
            has_query_bias=bool(c.query_bias),
            has_mlp=bool(c.mlp),
            qk_norm=False,
        )

    def position_embedding_module(self) -> nn.Module | None:
        return getattr(self.tf, "wpe", None)

    @property
    def W_pos(self) -> torch.Tensor | None:
        return super().W_pos if hasattr(self.tf, "wpe") else None

    def ln2_module(self, layer: int) -> nn.Module | None:
        return getattr(self.tf.h[layer], "ln_2", None)

    def mlp_module(self, layer: int) -> nn.Module | None:
        return getattr(self.tf.h[layer], "mlp", None)

    def _q(self, layer):
        w, b = super()._q(layer)
        return (w, torch.zeros_like(b)) if not self.config.query_bias and not b.is_meta else (w, b)

    def query_bias_view(self, layer: int) -> torch.Tensor | None:
        return super().query_bias_view(layer) if self.config.query_bias else None

    def rope(
        self,
        layer: int,
        T: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Rotary | None:
        if self.config.positions != "rotary":
            return None
        return Rotary(
            *rope_cos_sin(
                T, self.d_head, self.config.rope_theta, device or self.tf.wte.weight.device, dtype
            )
        )
