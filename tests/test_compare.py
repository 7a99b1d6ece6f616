"""``sinkscope compare`` / ``mitigate`` (issue 5): sweeps leave the model untouched, curves are
monotone on a planted sink, and the output contracts hold."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from sinkscope.data import Example, TokenizedInputs
from sinkscope.models import SinkModel, adapter_for
from sinkscope.stages.mitigate import MitigateConfig

COORD = 5


def planted_sink_model():
    """GPT-2 whose sink is built exactly as in the paper: p_0 has one huge coordinate, every
    head's b_Q is aligned with W_K's row for that coordinate."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(
        GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=200, n_positions=64)
    ).eval()
    ad = adapter_for(hf)
    with torch.no_grad():
        hf.transformer.wpe.weight[0, COORD] = 60.0
        for l in range(3):
            d = 32
            u = torch.randn(2, 16)
            u = u / u.norm(dim=-1, keepdim=True)
            ad.query_bias_view(l).copy_(2.0 * u)
            ad.key_weight_view(l)[COORD] = 2.0 * u.flatten()
            assert d == ad.d_model
    return SinkModel("planted", hf, ad)


def _inputs(n=12, T=24):
    g = torch.Generator().manual_seed(1)
    return TokenizedInputs(
        torch.randint(0, 200, (n, T), generator=g),
        [Example("x", ["nl", "code"][i % 2]) for i in range(n)],
        {},
    )


def test_sweep_is_monotone_on_a_planted_sink_and_leaves_the_model_unchanged():
    sm = planted_sink_model()
    before = {k: v.clone() for k, v in sm.hf.state_dict().items()}
    impl = sm.hf.config._attn_implementation
    strengths = (1.0, 0.75, 0.5, 0.25, 0.0)
    r = MitigateConfig(strengths=strengths).compute(sm, _inputs(), band=(0, 3), progress=False)
    df = r.tradeoff
    assert all(torch.equal(before[k], v) for k, v in sm.hf.state_dict().items())
    assert sm.hf.config._attn_implementation == impl
    assert not hasattr(sm.adapter.attention_module(0), "_sinkscope_qedit")
    base = df[(df.strength == 1) & (df.domain == "all")].bos_attention.iloc[0]
    assert base > 0.5, base  # the planted sink is real
    for edit in ("bq", "wk", "qbar"):
        curve = (
            df[(df.edit == edit) & (df.domain == "all")]
            .sort_values("strength", ascending=False)
            .bos_attention.to_numpy()
        )
        print(edit, curve.round(3))
        assert len(curve) == len(strengths)
        assert (curve[1:] <= curve[:-1] + 1e-6).all(), (edit, curve)
        assert curve[-1] < 0.5 * curve[0]
    assert set(df.columns) >= {"model", "edit", "strength", "domain", "bos_attention", "delta_ce"}
    assert df[df.strength == 1].delta_ce.abs().max() == 0


def test_scale_shared_query_at_one_is_the_identity_and_at_zero_matches_a_manual_edit():
    from sinkscope.analysis.shared_query import shared_query
    from sinkscope.interventions import ScaleSharedQuery, apply
    from sinkscope.interventions.base import Context

    sm = planted_sink_model()
    ti = _inputs(4, 10)
    r = shared_query(sm, ti, progress=False)
    ids = ti.ids
    with torch.no_grad():
        want = sm.hf(ids).logits
        ctx = Context(sm, cache={"q_bar": r.q_bar.float()})
        with apply(sm, ScaleSharedQuery(1.0), ctx=ctx):
            same = sm.hf(ids).logits
        torch.testing.assert_close(same, want, atol=1e-5, rtol=0)
        # q̄ := 0 on a model without rotary equals subtracting q̄ from b_Q
        ctx = Context(sm, cache={"q_bar": r.q_bar.float()})
        with apply(sm, ScaleSharedQuery(0.0), ctx=ctx):
            edited = sm.hf(ids).logits
        saved = [sm.adapter.query_bias_view(l).clone() for l in range(3)]
        for l in range(3):
            sm.adapter.query_bias_view(l).sub_(r.q_bar[l].float())
        manual = sm.hf(ids).logits
        for l in range(3):
            sm.adapter.query_bias_view(l).copy_(saved[l])
    torch.testing.assert_close(edited, manual, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def two_trained_models(tmp_path_factory):
    from sinkscope.training import TrainConfig, train
    from sinkscope.training.recipe import tiny_texts

    d = tmp_path_factory.mktemp("cmp")
    common = dict(
        n_layer=2,
        n_embd=32,
        n_head=4,
        context=40,
        batch=4,
        steps=3,
        vocab=300,
        eval_every=0,
        ckpt_every=0,
    )
    train(TrainConfig(**common), d / "gpt2", data=tiny_texts(), progress=False)
    train(
        TrainConfig(**common, positions="rotary", query_bias=False),
        d / "rope",
        data=tiny_texts(),
        progress=False,
    )
    data = d / "in.txt"
    data.write_text(
        "\n".join(" ".join(t.split()[:60]) for ts in tiny_texts().values() for t in ts[:6])
    )
    return d, data


def test_compare_and_mitigate_cli_contracts(two_trained_models, capsys):
    from sinkscope.cli import main

    d, data = two_trained_models
    out = d / "compare"
    models = f"{d / 'gpt2'},{d / 'rope'}"
    assert (
        main(
            [
                "compare",
                "--models",
                models,
                "--inputs",
                f"text:{data}",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    t = pd.read_csv(out / "compare.csv")
    need = {
        "model",
        "has_query_bias",
        "positional",
        "has_mlp",
        "qk_norm",
        "domain",
        "bos_attention",
        "creating_block",
        "massive_coords",
        "shared_query_share",
    }
    assert need <= set(t.columns)
    assert list(t.positional.unique()) == ["learned", "rotary"] and list(
        t.has_query_bias.unique()
    ) == [True, False]
    assert set(t.domain) == {"all", "in"}  # text:PATH inputs form one domain named after the file
    assert t.bos_attention.notna().all() and t.shared_query_share.notna().all()
    rope = t[t.positional == "rotary"].iloc[0]
    assert (
        pd.isna(rope.bq0_pct) and "query bias" in rope.bq0_reason
    )  # b_Q := 0 does not apply without b_Q
    assert not pd.isna(rope.qbar0_pct)  # removing q̄ does
    assert (out / "compare.png").stat().st_size > 0 and "shared-query share" in (
        out / "compare.md"
    ).read_text()
    out2 = d / "mitigate"
    assert (
        main(
            [
                "mitigate",
                "--models",
                models,
                "--inputs",
                f"text:{data}",
                "--out",
                str(out2),
                "--quiet",
                "--strengths",
                "1,0.5,0",
            ]
        )
        == 0
    )
    tr = pd.read_csv(out2 / "tradeoff.csv")
    assert list(tr.columns[:6]) == [
        "model",
        "edit",
        "strength",
        "domain",
        "bos_attention",
        "bos_attention_se",
    ] or {"model", "edit", "strength", "domain", "bos_attention", "delta_ce"} <= set(tr.columns)
    assert set(tr.strength) == {1.0, 0.5, 0.0}
    assert "bq" not in set(tr[tr.model.str.contains("rope")].edit)
    assert len(list(out2.glob("tradeoff_*.png"))) == 2
    meta = json.loads((out2 / "mitigate.json").read_text())
    assert len(meta["best"]) == 2
    assert (
        main(
            [
                "mitigate",
                "--model",
                str(d / "gpt2"),
                "--inputs",
                f"text:{data}",
                "--out",
                str(d / "bad"),
                "--strengths",
                "2",
            ]
        )
        == 2
    )
    assert "[0, 1]" in capsys.readouterr().err and not (d / "bad").exists()
