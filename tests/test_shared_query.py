"""The effective query bias (issue 5): reduces to GPT-2's literal b_Q plus the W_Q·mean(x) term,
and on rotary models the rotated split sums to the model's own scores."""

from __future__ import annotations

import pytest
import torch
from conftest import rotary_split_errors, tiny_model

from sinkscope.analysis.residual import on_block_inputs
from sinkscope.analysis.shared_query import query_key_batches, rotate, shared_gamma, shared_query
from sinkscope.data import Example, TokenizedInputs
from sinkscope.metrics import KeyAttentionCapture
from sinkscope.models import SinkModel, adapter_for
from sinkscope.models.base import Rotary


def _sm(hf):
    return SinkModel("tiny", hf, adapter_for(hf))


def _inputs(n=6, T=16, vocab=1000, ragged=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, T), generator=g)
    lengths = None
    if ragged:
        lengths = torch.tensor([T, T - 3, T, T - 5, T - 1, T][:n])
    return TokenizedInputs(
        ids, [Example("x", ["nl", "code"][i % 2]) for i in range(n)], {}, lengths=lengths
    )


def test_gpt2_effective_query_bias_is_bq_plus_wq_mean_x():
    sm = _sm(tiny_model("gpt2"))
    ad = sm.adapter
    ti = _inputs()
    r = shared_query(sm, ti, progress=False)
    xs = {}
    with torch.no_grad(), on_block_inputs(ad, lambda l, x: xs.__setitem__(l, ad.ln1(l, x))):
        ad.trunk()(input_ids=ti.ids)
    for l in range(ad.n_layers):
        mean_x = xs[l][:, 1:].double().mean((0, 1))  # [d_model] over the non-first positions
        want = ad.b_Q[l].double() + torch.einsum("d,hde->he", mean_x, ad.W_Q[l].double())
        diff = (r.q_bar[l] - want).abs().max().item()
        print(f"layer {l}: max |q̄ - (b_Q + W_Q·mean x)| = {diff:.2e}")
        assert diff < 1e-5
    # the literal b_Q term is reported beside it, from the same key contrasts
    assert r.bq_share() is not None and torch.isfinite(r.bq_share()).all()


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_rotary_split_recovers_pre_rope_queries_and_sums_to_scores(family):
    sm = _sm(tiny_model(family))
    ad = sm.adapter
    q_module = (
        ad.q_norm_module if family == "gemma3" else (lambda l: ad.attention_module(l).q_proj)
    )  # after QK-norm for Gemma
    for l, (q_err, _, split_err, scale) in enumerate(
        rotary_split_errors(sm, _inputs(n=3, T=12), q_module)
    ):
        assert q_err < 1e-5, (family, l)
        print(f"{family} layer {l}: max |shared + rest - model scores| = {split_err:.2e}")
        assert split_err < 1e-4 * scale


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_advantage_and_share_match_a_naive_loop(family):
    sm = _sm(tiny_model(family))
    ad = sm.adapter
    ti = _inputs(ragged=True)
    r = shared_query(sm, ti, progress=False)
    with torch.no_grad(), KeyAttentionCapture(ad, (0,), record_qk=True) as cap:
        ad.trunk()(input_ids=ti.ids)
    scores = cap.scores().double()
    ((_, qk, ropes),) = list(query_key_batches(sm, ti, batch_size=8, progress=False))
    for e in range(len(ti)):
        n = int(ti.lengths[e])
        for l in range(ad.n_layers):
            for h in range(ad.n_heads):
                adv = shared = 0.0
                _, k = qk[l]
                for i in range(n // 2, n):
                    adv += float(scores[e, l, h, i, 0] - scores[e, l, h, i, 1 : i + 1].mean())
                    qi = rotate(
                        r.q_bar[l, h].float()[None, :].expand(n, -1),
                        None
                        if ropes[l] is None
                        else Rotary(ropes[l].cos[:n], ropes[l].sin[:n], ropes[l].interleaved),
                    )[i]
                    s = k[e, h, :n] @ qi
                    shared += float(s[0] - s[1 : i + 1].mean())
                assert r.adv[e, l, h].item() == pytest.approx(adv, rel=1e-4, abs=1e-4)
                got = float(torch.einsum("e,e->", r.q_bar[l, h], r.contrast[e, l, h]))
                assert got == pytest.approx(shared, rel=1e-4, abs=1e-4)


def test_shared_gamma_equals_literal_gamma_when_q_bar_is_b_q():
    from sinkscope.analysis import gamma

    sm = _sm(tiny_model("gpt2"))
    g = shared_gamma(sm, sm.adapter.b_Q, T=16)
    assert torch.allclose(g.float(), gamma(sm.adapter), atol=1e-5)
