"""The two query pathways (issue 15): attention to index 0 recomputed from the effective query
bias q̄ alone, the content term alone and b_Q alone, checked against a per-example, per-position
loop written from the definitions on HF's own modules, and the full query against HF eager."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from sinkscope.analysis.pathways import ROUTES, pathways
from sinkscope.data import Example, TokenizedInputs
from sinkscope.errors import SinkscopeError
from sinkscope.models import SinkModel, adapter_for


def _inputs(n=5, T=16, ragged=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 1000, (n, T), generator=g)
    lengths = torch.tensor([T, T - 3, T, T - 5, T - 1][:n]) if ragged else None
    return TokenizedInputs(
        ids, [Example("x", ["nl", "code"][i % 2]) for i in range(n)], {}, lengths=lengths
    )


def _gpt2_qk(hf, hidden, l):
    """Per-head pre-rotary queries, keys and the query bias of GPT-2 block ``l``: ``[B, H, T, dh]``."""
    blk, H = hf.transformer.h[l], hf.config.n_head
    q, k, _ = blk.attn.c_attn(blk.ln_1(hidden[l])).split(hf.config.n_embd, dim=-1)
    heads = lambda t: t.view(*t.shape[:2], H, -1).transpose(1, 2)  # noqa: E731
    return heads(q), heads(k), blk.attn.c_attn.bias[: hf.config.n_embd].view(H, -1), None


def _llama_qk(hf, hidden, l):
    """The same for a Llama / Qwen2 block: pre-RoPE queries, RoPE (applied by the caller with the
    module's own ``apply_rotary_pos_emb``), GQA keys repeated per query head."""
    import importlib

    layer, cfg = hf.model.layers[l], hf.config
    H, Hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    x = layer.input_layernorm(hidden[l])
    B, T, _ = x.shape
    q = layer.self_attn.q_proj(x).view(B, T, H, -1).transpose(1, 2)
    k = layer.self_attn.k_proj(x).view(B, T, Hkv, -1).transpose(1, 2)
    cos, sin = hf.model.rotary_emb(x, torch.arange(T)[None])
    apply = importlib.import_module(type(hf).__module__).apply_rotary_pos_emb
    _, k = apply(k, k, cos, sin)
    k = k.repeat_interleave(H // Hkv, dim=1)
    bias = layer.self_attn.q_proj.bias
    rot = lambda v: apply(v, v, cos, sin)[0]  # noqa: E731  R_i v_i for v [B, H, T, dh]
    return q, k, None if bias is None else bias.view(H, -1), rot


def naive_pathways(hf, ti, family):
    """``{route: [example, layer, head]}``: for every example, layer, head and query i of the
    example's second half, the softmax over keys j <= i of scale·(R_i x)·k_j with x = q̃_i, q̄,
    q̃_i - q̄ or b_Q, and its entry at j = 0, averaged over the window. q̄: the mean of q̃ over the
    positions 1..n-1 of every example (n its length). Float64, explicit loops."""
    qk = _gpt2_qk if family == "gpt2" else _llama_qk
    with torch.no_grad():
        hidden = hf(ti.ids, output_hidden_states=True).hidden_states
        per_layer = [qk(hf, hidden, l) for l in range(len(hidden) - 1)]
    N = ti.ids.shape[0]
    L, H = len(per_layer), per_layer[0][0].shape[1]
    out = {r: torch.zeros(N, L, H, dtype=torch.float64) for r in ROUTES}
    for l, (q, k, b, rot) in enumerate(per_layer):
        dh = q.shape[-1]
        q, k = q.double(), k.double()
        total, count = torch.zeros(H, dh, dtype=torch.float64), 0
        for e in range(N):
            n = int(ti.lengths[e])
            for i in range(1, n):
                total += q[e, :, i]
                count += 1
        q_bar = total / count
        for e in range(N):
            n = int(ti.lengths[e])
            for h in range(H):
                T = q.shape[2]
                terms = {
                    "full": q[e, h],
                    "shared": q_bar[h].expand(T, dh),
                    "content": q[e, h] - q_bar[h],
                }
                if b is not None:
                    terms["bq"] = b[h].detach().double().expand(T, dh)
                for r, x in terms.items():
                    if rot is not None:  # rotate each position's query by its own angle
                        with torch.no_grad():
                            x = rot(x[None, None].float()).double()[0, 0]
                    acc = 0.0
                    for i in range(n // 2, n):
                        s = torch.stack([x[i] @ k[e, h, j] for j in range(i + 1)]) / dh**0.5
                        acc += float(torch.softmax(s, 0)[0])
                    out[r][e, l, h] = acc / (n - n // 2)
    return out


@pytest.mark.parametrize(
    "family,ragged", [("gpt2", False), ("gpt2", True), ("llama", False), ("qwen2", True)]
)
def test_pathways_match_a_naive_loop_and_hf_eager(family, ragged):
    hf = tiny_model(family)
    ti = _inputs(ragged=ragged)
    r = pathways(SinkModel("tiny", hf, adapter_for(hf)), ti, batch_size=2, progress=False)
    want = naive_pathways(hf, ti, family)
    assert set(r.routes) == {"full", "shared", "content"} | (
        {"bq"} if family in ("gpt2", "qwen2") else set()
    )
    for route in r.routes:
        diff = (r.attn[route].double() - want[route]).abs().max().item()
        print(
            f"{family} ragged={ragged} {route}: max |vectorised - naive loop| = {diff:.2e} (float32 vs float64)"
        )
        assert diff < 1e-6, route
    # the full query is the model's attention: HF eager's own patterns, and the capture's
    with torch.no_grad():
        att = hf(ti.ids, output_attentions=True).attentions  # per layer [batch, head, q, k]
    eager = torch.stack(
        [
            torch.stack([a[e, :, int(n) // 2 : int(n), 0].double().mean(-1) for a in att])
            for e, n in enumerate(ti.lengths)
        ]
    )
    diff = (r.attn["full"].double() - eager).abs().max().item()
    print(
        f"{family}: max |full route - HF eager| = {diff:.2e}, max |full - capture| = {r.full_vs_model:.2e}"
    )
    assert diff < 1e-6 and r.full_vs_model < 1e-6
    # shares are ratios of the means over examples
    assert torch.allclose(r.share("shared"), r.attn["shared"].mean(0) / r.attn["full"].mean(0))


def test_pathways_reuse_the_runs_q_bar():
    from sinkscope.analysis.shared_query import shared_query

    hf = tiny_model("gpt2")
    sm, ti = SinkModel("tiny", hf, adapter_for(hf)), _inputs()
    q_bar = shared_query(sm, ti, progress=False).q_bar
    a, b = pathways(sm, ti, progress=False), pathways(sm, ti, q_bar=q_bar, progress=False)
    assert all(torch.equal(a.attn[k], b.attn[k]) for k in a.routes)
    # a different q̄ changes the shared route only
    c = pathways(sm, ti, q_bar=torch.zeros_like(q_bar), progress=False)
    assert torch.equal(c.attn["full"], a.attn["full"]) and not torch.equal(
        c.attn["shared"], a.attn["shared"]
    )
    frame = a.frame({"all": ti.domain_masks()["all"], "nl": ti.domain_masks()["nl"]})
    assert len(frame) == 2 * 3 * 4 and {
        "attn_model",
        "attn_shared",
        "share_content",
        "share_bq",
    } <= set(frame.columns)


def test_pathways_refuse_a_window_shorter_than_the_inputs():
    hf = tiny_model("gemma3")  # sliding window 8 on its local layers
    with pytest.raises(SinkscopeError, match="sliding window"):
        pathways(SinkModel("tiny", hf, adapter_for(hf)), _inputs(T=16), progress=False)
