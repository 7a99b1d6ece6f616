"""Families on the generic adapter: only what their module structure does not show.

Each class names the ``model_type`` values it covers; everything else (blocks, norms, MLP,
projections, rotary, QK-norm, biases, GQA) :class:`~sinkscope.models.generic.GenericAdapter`
reads off the modules. A decoder whose ``model_type`` is not listed anywhere still gets the
generic adapter (``family`` ``generic``).
"""

from __future__ import annotations

from .generic import GenericAdapter


class LlamaAdapter(GenericAdapter):
    """Llama-style pre-norm decoders with separate Q/K/V/O and rotate-half RoPE: Llama, Qwen2
    (Q/K/V biases), Mistral, Qwen3 and Gemma-2/3 (QK-norm, sandwich norms, soft-capping, scaled
    embeddings), Phi-3 (fused ``qkv_proj`` as ``[q | k | v]``, the generic layout)."""

    family = "llama"
    model_types = ("llama", "qwen2", "mistral", "qwen3", "gemma2", "phi3")
    fused_layout = "blocks"  # Phi-3


class Gemma3Adapter(LlamaAdapter):
    family = "gemma3"
    model_types = ("gemma3_text",)


class Olmo2Adapter(GenericAdapter):
    """OLMo-2: norms on the attention and MLP *outputs* (none on their inputs), QK-norm over all
    heads at once."""

    family = "olmo2"
    model_types = ("olmo2",)
    post_norm = True


class GptOssAdapter(GenericAdapter):
    """GPT-OSS: a learned per-head sink logit (``sinks``, captured as ``sink_logit_mass``), MoE
    MLP, Q/K/V biases; its rotary tables hold one entry per rotated pair."""

    family = "gpt_oss"
    model_types = ("gpt_oss",)
    rope_style = "half-dup"


class PhiAdapter(GenericAdapter):
    """Phi-1/2: one LayerNorm feeds parallel attention and MLP; partial rotary; ``dense`` out."""

    family = "phi"
    model_types = ("phi",)
    parallel = True


class GPTJAdapter(GenericAdapter):
    """GPT-J: parallel attention and MLP on ``ln_1``; interleaved partial rotary."""

    family = "gptj"
    model_types = ("gptj",)
    parallel = True
    rope_style = "gptj"


class GPTNeoXAdapter(GenericAdapter):
    """GPT-NeoX / Pythia: fused ``query_key_value`` with rows ``[head, (q, k, v), d_head]``,
    partial rotary, parallel residual (``use_parallel_residual``)."""

    family = "gpt_neox"
    model_types = ("gpt_neox",)
    fused_layout = "per_head"

    def __init__(self, model):
        self.parallel = bool(getattr(model.config, "use_parallel_residual", True))
        super().__init__(model)

    def _fused_kv_heads(self, attn, rows):
        return self.n_heads

    def _split_fused(self, t, which):
        return t.view(self.n_heads, 3, self.d_head, *t.shape[1:])[:, which]


class FalconAdapter(GenericAdapter):
    """Falcon: fused ``query_key_value`` in one of three row layouts (grouped for the new decoder
    architecture, ``[q heads | k | v]`` for multi-query, ``[head, (q, k, v)]`` otherwise),
    parallel attention / MLP, RoPE or ALiBi; its attention calls SDPA itself."""

    family = "falcon"
    model_types = ("falcon",)
    fused_layout = "falcon"

    def __init__(self, model):
        c = model.config
        self.layout = (
            "grouped" if c.new_decoder_architecture else "mqa" if c.multi_query else "per_head"
        )
        self.parallel = bool(c.new_decoder_architecture or c.parallel_attn)
        super().__init__(model)

    def _fused_kv_heads(self, attn, rows):
        return {"grouped": self.config.num_kv_heads, "mqa": 1, "per_head": self.n_heads}[
            self.layout
        ]

    def _split_fused(self, t, which):
        H, KV, dh, rest = self.n_heads, self.n_kv_heads, self.d_head, t.shape[1:]
        if self.layout == "per_head":
            return t.view(H, 3, dh, *rest)[:, which]
        if self.layout == "mqa":
            return t.view(H + 2, dh, *rest)[
                (slice(0, H), slice(H, H + 1), slice(H + 1, H + 2))[which]
            ]
        g = H // KV  # grouped: [kv group, (g queries, k, v), d_head]
        v = t.view(KV, g + 2, dh, *rest)
        return v[:, :g].reshape(H, dh, *rest) if which == 0 else v[:, g + which - 1]
