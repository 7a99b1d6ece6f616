"""Interventions against a naive per-example loop written here (deep-copied, hand-edited models and
HF eager attention), exact restoration of the weights, the CLI's Table 1 and the edit language."""

from __future__ import annotations

import copy
import importlib.util
import json

import pandas as pd
import pytest
import torch
from conftest import ROOT, tiny_model

from sinkscope.data import Example, TokenizedInputs
from sinkscope.errors import SinkscopeError
from sinkscope.interventions import PAPER_LABELS, ScaleQueryBias, apply, paper_presets
from sinkscope.interventions.run import attention_maps, run_interventions
from sinkscope.interventions.spec import parse_edit
from sinkscope.models import SinkModel, adapter_for

COORDS = [5, 17]


def _model():
    hf = tiny_model("gpt2", seed=1)
    with torch.no_grad():  # GPT-2-like massive coordinates in p_0
        hf.transformer.wpe.weight[0, COORDS] = torch.tensor([40.0, -30.0])
    return hf


def _naive_module():
    """The naive per-example loop of ``benchmarks/table1.py`` (independent of sinkscope)."""
    spec = importlib.util.spec_from_file_location("table1_bench", ROOT / "benchmarks" / "table1.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _naive(hf, rid, ids, band, random_draw="paper"):
    """Per example: the edit by hand on a deep copy (or an explicit hook), eager attention, loops."""
    bench = _naive_module()
    out = bench.naive_table1(
        hf,
        ids,
        band,
        ids_order=rid,
        per_layer_forward=False,
        coords=COORDS,
        seed=0,
        random_draw=random_draw,
    )[rid]
    return torch.tensor(out, dtype=torch.float64)


def test_presets_match_naive_loop_and_leave_weights_bit_identical():
    hf = _model()
    sm = SinkModel("t", hf, adapter_for(hf))
    ids = torch.randint(0, 1000, (6, 20), generator=torch.Generator().manual_seed(2))
    ti = TokenizedInputs(ids, [Example("x", d) for d in "aaabbb"], {})
    before = {k: v.clone() for k, v in hf.state_dict().items()}
    r = run_interventions(
        sm, ti, paper_presets(seed=0), labels=PAPER_LABELS, batch_size=4, progress=False
    )
    assert all(torch.equal(before[k], v) for k, v in hf.state_dict().items())
    assert [x.id for x in r.runs] == list("abcdefghij") and all(x.applicable for x in r.runs)
    worst = {}
    for rid in "abcdefghij":
        want = _naive(hf, rid, ids, r.band)
        got = torch.tensor(
            [
                list(v)
                for v in zip(
                    r.per_example(rid, "mid"),
                    r.per_example(rid, "all"),
                    r.per_example(rid, "mid", key=1),
                    r.run(rid).ce,
                )
            ],
            dtype=torch.float64,
        )
        diff = (got - want).abs().max(dim=0).values
        worst[rid] = diff.tolist()
        assert diff[:3].max() < 1e-6, (rid, diff)
        assert diff[3] < 1e-5, (rid, diff)
    # (j) with sinkscope's own draw (random.Random(seed), distinct, non-massive) as well
    rs = run_interventions(
        sm,
        ti,
        {"a": paper_presets()["a"], "j": paper_presets(0, random="sinkscope")["j"]},
        batch_size=4,
        progress=False,
    )
    got = torch.tensor(
        [
            list(v)
            for v in zip(
                rs.per_example("j", "mid"),
                rs.per_example("j", "all"),
                rs.per_example("j", "mid", key=1),
                rs.run("j").ce,
            )
        ],
        dtype=torch.float64,
    )
    diff = (got - _naive(hf, "j", ids, r.band, random_draw="sinkscope")).abs().max(dim=0).values
    assert diff[:3].max() < 1e-6 and diff[3] < 1e-5, diff
    print("max |sinkscope - naive| per preset (bos mid, bos all, attn->1, CE):", json.dumps(worst))
    # the interventions do something: (c) and (d) move attention, (b)/(g)/(h) change the loss
    assert abs(r.per_example("c", "mid").mean() - r.per_example("a", "mid").mean()) > 1e-3


def test_not_applicable_is_reported():
    hf = tiny_model("llama")
    sm = SinkModel("l", hf, adapter_for(hf))
    ti = TokenizedInputs(torch.randint(0, 1000, (4, 12)), [Example("x", "a")] * 4, {})
    r = run_interventions(sm, ti, paper_presets(), progress=False)
    na = {x.id: x.reason for x in r.runs if not x.applicable}
    assert set(na) == {"b", "c", "d", "e", "h", "i"}
    assert "no query bias" in na["b"] and "positional" in na["c"] and "--coords" in na["i"]
    t = r.table()
    assert len(t) == 10 * 2 * 2 and set(t[~t.applicable].intervention) == set(na)
    # with explicit coordinates (i) runs
    r2 = run_interventions(
        sm,
        ti,
        {"a": paper_presets()["a"], "i": paper_presets()["i"]},
        coords=[3, 7],
        progress=False,
    )
    assert r2.run("i").applicable


def test_weights_restored_even_on_error():
    hf = _model()
    sm = SinkModel("t", hf, adapter_for(hf))
    before = hf.transformer.h[1].attn.c_attn.bias.clone()
    with pytest.raises(RuntimeError):
        with apply(sm, ScaleQueryBias(0.5, layers=[1])):
            assert not torch.equal(hf.transformer.h[1].attn.c_attn.bias, before)
            raise RuntimeError("boom")
    assert torch.equal(hf.transformer.h[1].attn.c_attn.bias, before)


def test_scaled_query_bias_per_layer_and_head():
    hf = _model()
    sm = SinkModel("t", hf, adapter_for(hf))
    b0 = sm.adapter.b_Q.clone()
    with apply(sm, ScaleQueryBias(0.5, layers=range(1, 3), heads=[0, 2])):
        b = sm.adapter.b_Q
    exp = b0.clone()
    exp[1:3][:, [0, 2]] *= 0.5
    assert torch.equal(b, exp)


def test_attention_maps_baseline_equals_eager():
    hf = _model()
    sm = SinkModel("t", hf, adapter_for(hf))
    ids = torch.randint(0, 1000, (12,))
    maps = attention_maps(sm, ids, {"a": paper_presets()["a"]}, (1, 3))
    m = copy.deepcopy(hf)
    m.config._attn_implementation = "eager"
    with torch.no_grad():
        att = torch.stack(m(ids[None], output_attentions=True).attentions)[
            1:3, 0
        ]  # [layer, head, q, k]
    assert (torch.from_numpy(maps["a"]) - att.mean(dim=(0, 1)).double()).abs().max() < 1e-6


def test_edit_language():
    assert parse_edit("half=bq:0.5@3:11")[1].describe() == "b_Q := 0.5·b_Q (layers 3..10)"
    assert parse_edit("zero_wk:1,2+no_pos")[0] == "zero_wk:1,2+no_pos"
    for bad in ("x=frobnicate", "x=bq:half", "=bq"):
        with pytest.raises(SinkscopeError):
            parse_edit(bad)


def test_intervene_cli(tmp_path, tiny_gpt2_dir, capsys):
    from transformers import AutoModelForCausalLM

    from sinkscope.cli import main

    hf = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir)
    with torch.no_grad():
        hf.transformer.wpe.weight[0, COORDS] = torch.tensor([40.0, -30.0])
        for blk in hf.transformer.h:
            blk.attn.c_attn.bias.normal_(0, 0.5)
    hf.save_pretrained(tiny_gpt2_dir)
    f = tmp_path / "in.jsonl"
    f.write_text(
        "\n".join(
            json.dumps(
                {
                    "text": f"Sentence {i} about the weather, the river and the mountains in spring and autumn.",
                    "domain": "ab"[i % 2],
                }
            )
            for i in range(6)
        )
    )
    out = tmp_path / "iv"
    rc = main(
        [
            "intervene",
            "--model",
            str(tiny_gpt2_dir),
            "--inputs",
            f"jsonl:{f}:text",
            "--max-tokens",
            "16",
            "--out",
            str(out),
            "--quiet",
            "--edit",
            "half_bq=bq:0.5@1:3",
        ]
    )
    assert rc == 0
    t = pd.read_csv(out / "table1.csv")
    assert {"intervention", "dataset", "scope", "mean", "se", "pct_baseline", "delta_ce"} <= set(
        t.columns
    )
    assert (
        len(t) == 11 * 3 * 2
        and set(t.scope) == {"mid", "all"}
        and set(t.dataset) == {"all", "a", "b"}
    )
    base = t[(t.intervention == "a")]
    assert (base.pct_baseline.round(9) == 100).all() and (base.delta_ce == 0).all()
    s = json.loads((out / "summary.json").read_text())
    assert len(s["interventions"]["j"]["random_key_coords"]) == 3
    assert {"fig5_attention_grid.png", "interventions.png", "table1.md", "per_example.csv"} <= {
        p.name for p in out.iterdir()
    }
    assert (
        "| half_bq |" in (out / "table1.md").read_text()
        or "half_bq" in (out / "table1.md").read_text()
    )
    assert (
        main(
            [
                "intervene",
                "--model",
                str(tiny_gpt2_dir),
                "--out",
                str(tmp_path / "bad"),
                "--edit",
                "x=nope",
            ]
        )
        == 2
    )
    assert "unknown" in capsys.readouterr().err


def test_one_edit_language_for_presets_compare_and_mitigate():
    """The paper's presets, compare's edits and mitigate's sweeps are written in the --edit
    language; each builds the same intervention as the classes it names."""
    from sinkscope.interventions import (
        DropPositionEmbeddings,
        Identity,
        PatchIndex0,
        RandomKeyCoords,
        ReplacePositionEmbedding,
        ScaleQueryBias,
        ScaleSharedQuery,
        SkipMLP,
        SwapDirection,
        ZeroKeyCoords,
        ZeroTokenEmbedding,
    )
    from sinkscope.interventions.spec import SCALABLE, parse_edit
    from sinkscope.stages.mitigate import EDITS, sweep_edits

    by_hand = [
        Identity(),
        ScaleQueryBias(0.0),
        ReplacePositionEmbedding(0, 1),
        SwapDirection("epe", 0),
        SwapDirection("pe", 0),
        ZeroTokenEmbedding(0),
        SkipMLP(),
        DropPositionEmbeddings(),
        ZeroKeyCoords(),
        RandomKeyCoords(3, seed=42, draw="paper"),
    ]
    assert [iv.describe() for iv in paper_presets(5).values()] == [iv.describe() for iv in by_hand]
    assert (
        paper_presets(5, random="sinkscope")["j"].describe()
        == RandomKeyCoords(3, seed=5).describe()
    )
    assert (
        parse_edit("random_wk:3:42:paper")[1].describe()
        == RandomKeyCoords(3, seed=42, draw="paper").describe()
    )
    assert EDITS == SCALABLE
    sweep = sweep_edits((1.0, 0.5, 0.0), EDITS)
    assert sweep["bq@0.5"].describe() == ScaleQueryBias(0.5).describe()
    assert sweep["qbar@0"].describe() == ScaleSharedQuery(0.0).describe()
    assert sweep["wk@0.5"].describe() == ZeroKeyCoords(scale=0.5).describe()
    assert sweep["patch0@0.5"].fraction == PatchIndex0(0.5).fraction
    assert (
        parse_edit("x=qbar:0.25@1:3")[1].describe()
        == ScaleSharedQuery(0.25, layers=range(1, 3)).describe()
    )
