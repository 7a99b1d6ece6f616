"""Tiny random configs of every tested family: the tests' models and the architectures table
(``scripts/architectures.py``). Weights large enough that attention is far from uniform.

>>> tiny_config("gpt_neox").model_type, new_family_config("falcon-new", {}).new_decoder_architecture
('gpt_neox', True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PretrainedConfig


def tiny_config(family: str) -> PretrainedConfig:
    from transformers import (
        Gemma3TextConfig,
        GPT2Config,
        GPTNeoConfig,
        LlamaConfig,
        OPTConfig,
        Qwen2Config,
    )

    # weights large enough that attention is far from uniform; GPT-Neo does not scale q·k by
    # 1/sqrt(d_head), so it gets a 2x smaller init for logits of the same size
    common = dict(vocab_size=1000, initializer_range=0.05 if family == "gpt_neo" else 0.1)
    if family == "gpt2":
        return GPT2Config(n_layer=3, n_embd=64, n_head=4, n_positions=128, **common)
    if family == "llama":
        return LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            **common,
        )
    if family == "qwen2":
        return Qwen2Config(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            **common,
        )
    if family == "gemma3":
        return Gemma3TextConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            sliding_window=8,
            max_position_embeddings=128,
            **common,
        )
    if family == "gpt_neo":
        return GPTNeoConfig(
            hidden_size=64,
            num_layers=2,
            num_heads=4,
            attention_types=[[["global", "local"], 1]],
            window_size=8,
            max_position_embeddings=128,
            **common,
        )
    if family == "opt":
        return OPTConfig(
            hidden_size=64,
            ffn_dim=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=128,
            word_embed_proj_dim=64,
            **common,
        )
    return new_family_config(family, common)


def new_family_config(family: str, common: dict) -> PretrainedConfig:
    """Tiny configs of the families on the generic adapter (issue 14), with the features that
    make them differ: partial / interleaved rotary, fused QKV layouts, QK-norm, post-norm,
    parallel blocks, soft-capping, learned sink logits, GQA."""
    import transformers as T

    llama_like = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        **common,
    )
    if family == "mistral":
        return T.MistralConfig(sliding_window=16, **llama_like)
    if family == "qwen3":
        return T.Qwen3Config(head_dim=16, **llama_like)
    if family == "olmo2":
        return T.Olmo2Config(**llama_like)
    if family == "phi3":
        return T.Phi3Config(pad_token_id=0, **llama_like)
    if family == "gemma2":
        return T.Gemma2Config(
            head_dim=16, sliding_window=8, attn_logit_softcapping=5.0, **llama_like
        )
    if family == "gpt_oss":
        return T.GptOssConfig(
            head_dim=16,
            num_local_experts=4,
            num_experts_per_tok=2,
            sliding_window=8,
            **{**llama_like, "intermediate_size": 64},
        )
    if family == "gpt_neox":
        return T.GPTNeoXConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=128,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.5,
            },
            **common,
        )
    if family == "phi":
        return T.PhiConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=128,
            **common,
        )
    if family == "gptj":
        return T.GPTJConfig(n_embd=64, n_layer=3, n_head=4, rotary_dim=8, n_positions=128, **common)
    if family.startswith(
        "falcon"
    ):  # falcon (multi-query), falcon-new (grouped KV), falcon-mha (per-head)
        kw = {
            "falcon": dict(multi_query=True),
            "falcon-new": dict(new_decoder_architecture=True, num_kv_heads=2, bias=True),
            "falcon-mha": dict(multi_query=False, parallel_attn=False, bias=True),
        }[family]
        return T.FalconConfig(
            hidden_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=128,
            **kw,
            **common,
        )
    raise KeyError(family)


FAMILIES = (
    "gpt2",
    "llama",
    "qwen2",
    "gemma3",
    "gpt_neo",
    "opt",
)  # the hand-written adapters' families
# on the generic adapter (issue 14); the Falcon variants cover its three fused QKV layouts
GENERIC_FAMILIES = (
    "gpt_neox",
    "phi",
    "phi3",
    "mistral",
    "qwen3",
    "olmo2",
    "falcon",
    "falcon-new",
    "falcon-mha",
    "gptj",
    "gemma2",
    "gpt_oss",
)
