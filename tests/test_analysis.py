"""The circuit analyses against plain per-example, per-position loops (the loops are the oracle),
and the paper's γ numbers on the real GPT-2 attention weights."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import PARTIAL, needs_shared, tiny_model

from sinkscope.analysis import (
    bq_key_alignment,
    delta_percentiles,
    effective_positional_embedding,
    epe_validation,
    gamma,
    gamma_split,
    massive_coords,
    recenter,
    score_terms,
    separation,
    source_agnostic_shift,
)
from sinkscope.data import Example, TokenizedInputs
from sinkscope.errors import SinkscopeError
from sinkscope.models import SinkModel, adapter_for


def _gpt2_raw(hf, layer):
    """W_Q, b_Q, W_K, b_K of one layer sliced straight out of c_attn (independent of adapters)."""
    a = hf.transformer.h[layer].attn
    d, H = hf.config.n_embd, hf.config.n_head
    dh = d // H
    w, b = a.c_attn.weight.detach(), a.c_attn.bias.detach()
    heads = lambda m: [m[:, h * dh : (h + 1) * dh] for h in range(H)]  # noqa: E731
    return (
        heads(w[:, :d]),
        [b[h * dh : (h + 1) * dh] for h in range(H)],
        heads(w[:, d : 2 * d]),
        [b[d + h * dh : d + (h + 1) * dh] for h in range(H)],
    )


def _trained_gpt2(steps=80):
    """A tiny GPT-2 trained for a few AdamW steps on patterned data: not random any more."""
    torch.manual_seed(0)
    hf = tiny_model("gpt2")
    hf.train()
    opt = torch.optim.AdamW(hf.parameters(), lr=3e-3, weight_decay=0.1)
    base = torch.arange(32) % 7
    for _ in range(steps):
        ids = (base[None] * torch.randint(1, 9, (16, 1)) + torch.randint(0, 50, (16, 1))) % 1000
        loss = hf(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return hf.eval(), loss.item()


@pytest.mark.parametrize("which", ["random", "trained", "opt"])
def test_four_terms_sum_to_model_scores(which):
    hf = (
        _trained_gpt2()[0]
        if which == "trained"
        else tiny_model("gpt2" if which == "random" else "opt")
    )
    sm = SinkModel(which, hf, adapter_for(hf))
    t = score_terms(sm, torch.randint(0, 1000, (3, 24)))
    err = (t.total() - t.scores).abs().max().item()
    print(
        f"{which}: max |sum of terms - model score| = {err:.1e} (scores up to {t.scores.abs().max():.1f})"
    )
    assert err < 1e-6 * max(10.0, t.scores.abs().max().item())  # fp32: relative to the scores' size
    assert t.delta.abs().max() > 0.1 and t.query_only.abs().max() > 0.1  # biases really contribute


def test_decomposition_refuses_rotary():
    hf = tiny_model("llama")
    with pytest.raises(SinkscopeError, match="rotary"):
        score_terms(SinkModel("l", hf, adapter_for(hf)), torch.randint(0, 1000, (1, 8)))


def test_delta_matches_reference_loop():
    hf, _ = _trained_gpt2()
    sm = SinkModel("t", hf, adapter_for(hf))
    ids = torch.randint(0, 1000, (5, 12))
    lengths = torch.tensor([12, 12, 9, 12, 6])
    ti = TokenizedInputs(ids, [Example("x", "a")] * 5, {}, lengths=lengths)
    got = recenter(
        source_agnostic_shift(sm, ti, batch_size=2, progress=False)
    )  # [example, layer, head, pos]
    L, H = hf.config.n_layer, hf.config.n_head
    for e in range(5):
        n = int(lengths[e])
        with torch.no_grad():
            hs = hf(
                ids[e : e + 1, :n], output_hidden_states=True
            ).hidden_states  # resid_pre of each layer
        for l in range(L):
            x = hf.transformer.h[l].ln_1(hs[l][0]).detach()
            _, bq, wk, _ = _gpt2_raw(hf, l)
            for h in range(H):
                raw = [float(bq[h] @ (x[j] @ wk[h])) for j in range(n)]
                lo = min(raw)
                for j in range(n):
                    assert abs(got[e, l, h, j].item() - (raw[j] - lo)) < 1e-4
                assert all(math.isnan(got[e, l, h, j].item()) for j in range(n, 12))


def test_delta_percentiles_and_separation():
    rng = np.random.default_rng(0)
    d = torch.from_numpy(rng.exponential(1.0, size=(50, 2, 3, 6)))
    d[:, 1, :, 0] += 20.0  # layer 1: index 0 clearly separated
    table = delta_percentiles(d)
    row = table[(table.layer == 0) & (table.position == 4)].iloc[0]
    v = d[:, 0, :, 4].numpy().ravel()
    assert np.isclose(row.p10, np.percentile(v, 10)) and np.isclose(row.p50, np.median(v))
    import statistics  # the std column is the paper's population std (np.std); ddof=1 on request

    assert np.isclose(row["std"], statistics.pstdev(v.tolist()), rtol=1e-12)
    row1 = delta_percentiles(d, ddof=1)
    assert np.isclose(
        row1[(row1.layer == 0) & (row1.position == 4)].iloc[0]["std"],
        statistics.stdev(v.tolist()),
        rtol=1e-12,
    )
    sep = separation(table)
    assert sep.index0_p10_above_all_other_p90.tolist() == [False, True]


def test_epe_and_validation_match_loops():
    hf = tiny_model("gpt2")
    ad = adapter_for(hf)
    epe = effective_positional_embedding(ad, 10)
    mlp = hf.transformer.h[0].mlp
    wpe, wte = hf.transformer.wpe.weight.detach(), hf.transformer.wte.weight.detach()
    with torch.no_grad():
        for j in range(10):
            torch.testing.assert_close(epe[j], wpe[j] + mlp(wpe[j]))
        ids = torch.randint(0, 1000, (3, 10))
        cos = epe_validation(SinkModel("t", hf, ad), ids)
        for e in range(3):
            for j in range(10):
                t, p = wte[ids[e, j]], wpe[j]
                R, O = (t + p) + mlp(t + p), t + mlp(t)
                want = float(F.cosine_similarity(R - O, p + mlp(p), dim=0))
                assert abs(cos[e, j].item() - want) < 1e-5


def test_massive_coords_rule():
    v = torch.randn(768, generator=torch.Generator().manual_seed(0))
    v[[138, 378, 447]] = torch.tensor([330.0, -218.0, 105.0])
    coords, values = massive_coords(v)
    a = v.abs().numpy().astype(np.float64)
    assert coords == [int(i) for i in np.nonzero(a > a.mean() + 3 * a.std())[0]] == [138, 378, 447]
    assert values == pytest.approx([330.0, -218.0, 105.0])


def test_gamma_and_alignment_match_loops():
    hf = tiny_model("gpt2")
    ad = adapter_for(hf)
    g = gamma(ad)
    epe = effective_positional_embedding(ad, 6)
    cos = bq_key_alignment(ad, epe, (1, 3))
    for l in range(3):
        _, bq, wk, _ = _gpt2_raw(hf, l)
        for h in range(4):
            for d in range(0, 64, 7):
                assert (
                    abs(
                        g[l, h, d].item()
                        - sum(bq[h][e].item() * wk[h][d, e].item() for e in range(16))
                    )
                    < 1e-5
                )
            if l >= 1:
                for j in range(6):
                    want = float(F.cosine_similarity(bq[h], epe[j] @ wk[h], dim=0))
                    assert abs(cos[l - 1, h, j].item() - want) < 1e-5
    summary, table = gamma_split(g, [5, 9], (1, 3))
    assert summary["massive"]["count"] == 2 * 4 * 2 and summary["other"]["count"] == 2 * 4 * 62
    assert math.isclose(summary["massive"]["mean"], table[table.massive].abs_gamma.mean())


@needs_shared
def test_gamma_reproduces_paper_on_real_gpt2(tmp_path, capsys):
    """Fig 4/8 numbers from the real GPT-2 small attention weights, through the CLI."""
    from sinkscope.cli import main

    out = tmp_path / "explain"
    assert (
        main(
            [
                "explain",
                "--model",
                str(PARTIAL),
                "--coords",
                "138,378,447",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    g = json.loads((out / "summary.json").read_text())["gamma"]
    print(json.dumps(g))
    assert (round(g["massive"]["mean"], 4), round(g["other"]["mean"], 4)) == (1.3695, 0.1757)
    assert (round(g["massive"]["median"], 4), round(g["other"]["median"], 4)) == (1.0923, 0.1237)
    assert (g["massive"]["count"], g["other"]["count"]) == (288, 73440)
    assert g["coords"] == [138, 378, 447] and g["layers"] == [3, 11]
    skipped = {
        s["stage"]: s["reason"] for s in json.loads((out / "summary.json").read_text())["skipped"]
    }
    assert (
        "transformer.h.0.mlp.c_fc.weight" in skipped["epe"]
        and "transformer.wte.weight" in skipped["delta"]
    )
    assert (out / "fig4_gamma_hist.png").stat().st_size > 10_000
    assert "mean 1.3695" in capsys.readouterr().out


@needs_shared
def test_partial_without_coords_is_explained(tmp_path, capsys):
    from sinkscope.cli import main

    out = tmp_path / "e"
    assert main(["explain", "--model", str(PARTIAL), "--out", str(out), "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert "gamma" not in s and any(
        "--coords" in k["reason"] for k in s["skipped"] if k["stage"] == "gamma"
    )


def test_explain_cli_full_run(tmp_path, tiny_gpt2_dir, capsys):
    from transformers import AutoModelForCausalLM

    from sinkscope.cli import main

    hf = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir)
    with torch.no_grad():  # plant GPT-2-like massive activations in p_0, and real query biases
        hf.transformer.wpe.weight[0, [5, 17]] = torch.tensor([40.0, -30.0])
        for block in hf.transformer.h:
            block.attn.c_attn.bias.normal_(0, 0.5)
    hf.save_pretrained(tiny_gpt2_dir)
    text = tmp_path / "t.txt"
    text.write_text(
        "\n".join(
            f"Line {i}: the committee met again to discuss the budget, the library and the park in detail."
            for i in range(6)
        )
    )
    out = tmp_path / "ex"
    assert (
        main(
            [
                "explain",
                "--model",
                str(tiny_gpt2_dir),
                "--inputs",
                f"text:{text}",
                "--max-tokens",
                "16",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    s = json.loads((out / "summary.json").read_text())
    assert {"gamma", "epe", "delta", "alignment", "decomposition_check"} <= set(s) and s[
        "skipped"
    ] == []
    assert s["decomposition_check"]["max_abs_error"] < 1e-5
    assert s["gamma"]["coords"] == s["epe"]["massive_coords"] == [5, 17] and s[
        "coords_source"
    ].startswith("EPE_0 rule")
    assert {"validation_median_index0", "massive_values"} <= set(s["epe"])
    names = {p.name for p in out.iterdir()}
    assert {
        "fig1_delta_hist.png",
        "fig2_alignment.png",
        "fig3_epe_validation.png",
        "fig4_gamma_hist.png",
        "fig6_delta_hist_full.png",
        "fig7_massive_coords.png",
        "fig8_gamma_hist_full.png",
    } <= names
    assert {
        "gamma.csv",
        "delta_percentiles.csv",
        "delta_separation.csv",
        "epe_validation.csv",
        "alignment.csv",
    } <= names


def test_residual_profile_matches_hidden_states_loop():
    """Index-0 statistics per block against HF's own hidden states, example by example."""
    from sinkscope.analysis import residual_profile

    hf = tiny_model("gpt2")
    with torch.no_grad():
        hf.transformer.wpe.weight[0, [5, 17]] = torch.tensor([60.0, -45.0])
    sm = SinkModel("t", hf, adapter_for(hf))
    ids = torch.randint(0, 1000, (4, 10))
    lengths = torch.tensor([10, 7, 10, 9])
    p = residual_profile(
        sm,
        TokenizedInputs(ids, [Example("x", "a")] * 4, {}, lengths=lengths),
        batch_size=3,
        progress=False,
    )
    L = hf.config.n_layer
    for i in range(
        L
    ):  # hidden_states[i] = input of block i = output of block i-1 (the last one is after ln_f)
        n0, no, med = [], [], []
        for e in range(4):
            with torch.no_grad():
                h = hf(ids[e : e + 1, : int(lengths[e])], output_hidden_states=True).hidden_states[
                    i
                ][0]
            n0.append(float(h[0].norm()))
            no.append(float(h[1:].norm(dim=-1).median()))
            med.append(float(h.abs().flatten().median()))
        assert (
            abs(p.norm0[i] - np.mean(n0)) < 1e-3
            and abs(p.norm_other[i] - np.mean(no)) < 1e-3
            and abs(p.median_abs[i] - np.mean(med)) < 1e-4
        )
    assert p.creating_block() == -1  # planted in p_0: special from the embeddings on
    coords, values = p.massive(-1, ratio=20, min_abs=10)
    assert coords[:2] == [5, 17] and values[0] > 50


def test_massive_coordinates_are_chosen_by_one_rule_in_order():
    """--coords, else the EPE_0 rule (learned positions + MLP), else the residual-stream rule,
    else none with the reason; every answer names its rule."""
    from conftest import tiny_model

    from sinkscope.analysis import effective_positional_embedding, massive_coords
    from sinkscope.analysis.facts import choose_massive_coords
    from sinkscope.models import SinkModel, adapter_for

    gpt2, llama = (
        SinkModel(f, m, adapter_for(m))
        for f, m in (("gpt2", tiny_model("gpt2")), ("llama", tiny_model("llama")))
    )
    assert choose_massive_coords(gpt2, [3, 1]).record() == {"coords": [3, 1], "rule": "--coords"}
    got = choose_massive_coords(gpt2, k_sigma=2.0)
    assert (
        list(got.coords)
        == massive_coords(effective_positional_embedding(gpt2.adapter, 1)[0], 2.0)[0]
        and "mean + 2 std" in got.rule
    )
    assert choose_massive_coords(llama, residual=([9, 4], 1)).record() == {
        "coords": [9, 4],
        "rule": "residual-stream rule: index 0's massive activations after block 1",
    }
    none = choose_massive_coords(llama)
    assert none.coords is None and "no learned positional embedding" in none.rule
    with pytest.raises(SinkscopeError, match="outside the model's 64"):
        choose_massive_coords(gpt2, [64])


def test_explain_on_a_model_without_query_bias_uses_the_effective_query_bias():
    """No b_Q (Llama): γ = b_Q·W_K would be all zero, so explain computes γ with q̄ (given inputs)
    and says so; the b_Q alignment is skipped with the reason; without inputs the advice is to
    give inputs, not --coords (which would give an all-zero γ)."""
    from sinkscope.analysis.shared_query import shared_gamma, shared_query
    from sinkscope.stages.explain import explain

    hf = tiny_model("llama")
    sm = SinkModel("llama", hf, adapter_for(hf))
    g = torch.Generator().manual_seed(0)
    ti = TokenizedInputs(torch.randint(0, 1000, (6, 16), generator=g), [Example("t", "x")] * 6, {})
    s = explain(sm, ti, coords=[3, 7], progress=False).summary()
    assert "q̄" in s["gamma_query"] and s["gamma"]["coords"] == [3, 7]
    want = shared_gamma(sm, shared_query(sm, ti, progress=False).q_bar, 16)[
        1:3
    ].abs()  # the band of 3 layers: 1..2
    assert s["gamma"]["layers"] == [1, 3]
    assert abs(s["gamma"]["massive"]["mean"] - float(want[..., [3, 7]].mean())) < 1e-5
    assert any(x["stage"] == "alignment" and "no query bias" in x["reason"] for x in s["skipped"])
    w = explain(sm, None, coords=[3, 7], progress=False).summary()
    assert "gamma" not in w and any(
        x["stage"] == "gamma" and "give inputs" in x["reason"] for x in w["skipped"]
    )
