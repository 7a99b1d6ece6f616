"""Adapters reproduce each model's own projections, norms and MLPs (checked with forward hooks)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from sinkscope.errors import SinkscopeError
from sinkscope.models import SUPPORTED_MODEL_TYPES, adapter_for


def _capture_layer(model, ad, layer, ids):
    """Residual stream entering ``layer`` and the module's q/k/v projections, via hooks."""
    store = {}
    block = ad.layers()[layer]
    h1 = block.register_forward_pre_hook(
        lambda m, args, kwargs: store.__setitem__(
            "resid", (args[0] if args else kwargs["hidden_states"]).detach()
        ),
        with_kwargs=True,
    )
    attn = ad.attention_module(layer)
    hooks = [h1]
    if ad.family == "gpt2":
        hooks.append(
            attn.c_attn.register_forward_hook(lambda m, i, o: store.__setitem__("qkv", o.detach()))
        )
        hooks.append(
            attn.c_proj.register_forward_hook(
                lambda m, i, o: store.update(z=i[0].detach(), attn_out=o.detach())
            )
        )
    else:
        for name in ("q_proj", "k_proj", "v_proj"):
            hooks.append(
                getattr(attn, name).register_forward_hook(
                    lambda m, i, o, name=name: store.__setitem__(name, o.detach())
                )
            )
        out_name = "o_proj" if hasattr(attn, "o_proj") else "out_proj"
        hooks.append(
            getattr(attn, out_name).register_forward_hook(
                lambda m, i, o: store.update(z=i[0].detach(), attn_out=o.detach())
            )
        )
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    if ad.family == "gpt2":
        d = ad.d_model
        store["q_proj"], store["k_proj"], store["v_proj"] = (
            store["qkv"][..., :d],
            store["qkv"][..., d : 2 * d],
            store["qkv"][..., 2 * d :],
        )
    return store


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2", "gemma3", "gpt_neo", "opt"])
def test_projections_match_modules(family):
    model = tiny_model(family)
    ad = adapter_for(model)
    ids = torch.randint(0, 1000, (2, 12))
    W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O = (
        ad.W_Q,
        ad.b_Q,
        ad.W_K,
        ad.b_K,
        ad.W_V,
        ad.b_V,
        ad.W_O,
        ad.b_O,
    )
    L, H, dh, d = ad.n_layers, ad.n_heads, ad.d_head, ad.d_model
    assert W_Q.shape == (L, H, d, dh) and W_K.shape == (L, H, d, dh) and W_O.shape == (L, H, dh, d)
    assert b_Q.shape == (L, H, dh) and b_O.shape == (L, d)
    rep = ad.n_heads // ad.n_kv_heads
    for layer in range(L):
        s = _capture_layer(model, ad, layer, ids)
        with torch.no_grad():
            x = ad.ln1(layer, s["resid"])  # [batch, pos, d_model]
            q = (
                torch.einsum("bpd,hde->bphe", x, W_Q[layer]) + b_Q[layer]
            )  # [batch, pos, head, d_head]
            k = torch.einsum("bpd,hde->bphe", x, W_K[layer]) + b_K[layer]
            v = torch.einsum("bpd,hde->bphe", x, W_V[layer]) + b_V[layer]
        torch.testing.assert_close(q.flatten(2), s["q_proj"], atol=1e-5, rtol=1e-5)
        # K/V are repeated per query head under GQA: compare the first of each group
        torch.testing.assert_close(k[:, :, ::rep].flatten(2), s["k_proj"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(v[:, :, ::rep].flatten(2), s["v_proj"], atol=1e-5, rtol=1e-5)
        z = s["z"].unflatten(-1, (H, dh))  # [batch, pos, head, d_head]
        out = torch.einsum("bphe,hed->bpd", z, W_O[layer]) + b_O[layer]
        torch.testing.assert_close(out, s["attn_out"], atol=1e-5, rtol=1e-5)


def test_biases_reported_truthfully():
    assert adapter_for(tiny_model("gpt2")).info().has_query_bias
    assert adapter_for(tiny_model("qwen2")).info().has_query_bias
    llama = adapter_for(tiny_model("llama"))
    assert not llama.info().has_query_bias and torch.count_nonzero(llama.b_Q) == 0
    assert adapter_for(tiny_model("gemma3")).info().qk_norm
    assert adapter_for(tiny_model("gpt2")).W_pos.shape == (128, 64)
    assert adapter_for(tiny_model("llama")).W_pos is None


def test_mlp_and_ln_match_blocks():
    model = tiny_model("gpt2")
    ad = adapter_for(model)
    x = torch.randn(2, 5, ad.d_model)
    block = model.transformer.h[1]
    with torch.no_grad():
        torch.testing.assert_close(ad.mlp(1, ad.ln2(1, x)), block.mlp(block.ln_2(x)))
        # LayerNorm parameters are the raw ones (no folding): recompute by hand
        w, b = ad.ln1_params(1)
        ref = (x - x.mean(-1, keepdim=True)) / torch.sqrt(
            x.var(-1, unbiased=False, keepdim=True) + 1e-5
        ) * w + b
        torch.testing.assert_close(ad.ln1(1, x), ref, atol=1e-5, rtol=1e-5)


def test_opt_positional_offset():
    model = tiny_model("opt")
    ad = adapter_for(model)
    assert torch.equal(ad.W_pos, model.model.decoder.embed_positions.weight[2:])


def test_unknown_architecture_lists_supported():
    from transformers import BertConfig, BertLMHeadModel

    m = BertLMHeadModel(
        BertConfig(
            num_hidden_layers=1,
            hidden_size=32,
            num_attention_heads=2,
            intermediate_size=64,
            is_decoder=True,
        )
    )
    with pytest.raises(SinkscopeError) as e:
        adapter_for(m)
    msg = str(e.value)
    assert "'bert'" in msg and all(t in msg for t in SUPPORTED_MODEL_TYPES)
