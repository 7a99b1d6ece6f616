"""``--preset paper`` is the paper's procedure, exactly: sinkscope against ``paper_reference``
(the paper's definitions re-implemented example by example, no sinkscope code) on a 12-layer
GPT-2-shaped model with a planted circuit where the σ rule and the top-3 rule disagree: EPE_0 has
one huge coordinate (σ picks it alone) and two moderate ones (top-3 adds them)."""

from __future__ import annotations

import csv
import json
import statistics

import pandas as pd
import paper_reference as ref
import pytest
import torch

from sinkscope.errors import SinkscopeError

PLANT = [5, 17, 30]  # EPE_0: +60 (σ rule), -12 and +10 (top-3 only)
SIGMA = [5]
DATASETS = ("sst2", "gsm8k", "humaneval")
TEXTS = [
    "The film opens slowly, but its quiet scenes of a family repairing an old boat on the coast grow into something warm, funny and honest about grief, money, old friendships and the stubborn hope of a long summer.",
    "A tired script, two bored leads and a plot that wanders from the city to the desert and back again without ever deciding what it wants to say about love, work or loyalty in the end.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May, and how many per week on average?",
    "A bakery makes 120 loaves every morning. It sells three quarters of them before noon and gives 10 to a shelter. If each loaf costs 4 dollars, how much money does the bakery earn each day?",
    'def below_zero(operations: list) -> bool:\n    """ You are given a list of deposit and withdrawal operations on a bank account that starts with zero balance. Detect if at any point the balance falls below zero."""\n',
    'def mean_absolute_deviation(numbers: list) -> float:\n    """ For a given list of input numbers, calculate the Mean Absolute Deviation around the mean of this dataset, the average absolute difference between each element and the centre."""\n',
]


@pytest.fixture(scope="module")
def planted(tmp_path_factory, gpt2_tokenizer):
    """(model directory, HF model, 40-token texts' ids, paper-csv path)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(
        GPT2Config(n_layer=12, n_embd=64, n_head=4, n_positions=64, initializer_range=0.1)
    ).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():  # real biases and LayerNorm gains
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.3 * torch.randn_like(p))
        hf.transformer.wpe.weight[0, PLANT] = torch.tensor([60.0, -12.0, 10.0])
        hf.transformer.h[0].mlp.c_fc.weight[PLANT] = 0.0  # MLP⁰ ignores them: EPE_0 keeps the plant
    root = tmp_path_factory.mktemp("paper-exact")
    d = root / "planted-gpt2"
    hf.save_pretrained(d)
    gpt2_tokenizer.save_pretrained(d)
    rows, ids_list = [], []
    for i, text in enumerate(TEXTS):  # the paper's inputs: cut to 40 tokens, decoded, re-encoded
        ids = gpt2_tokenizer(text, add_special_tokens=False)["input_ids"][:40]
        t40 = gpt2_tokenizer.decode(ids)
        assert len(ids) == 40 and gpt2_tokenizer(t40, add_special_tokens=False)["input_ids"] == ids
        rows.append({"dataset": DATASETS[i // 2], "text": t40})
        ids_list.append(ids)
    f = root / "inputs.csv"
    with open(f, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["dataset", "text"])
        w.writeheader()
        w.writerows(rows)
    return d, hf, ids_list, f


def _by_dataset(values, ids_list):
    groups = {"all": list(range(len(ids_list)))} | {
        ds: [i for i in range(len(ids_list)) if DATASETS[i // 2] == ds] for ds in DATASETS
    }
    return {ds: statistics.fmean(values[i] for i in sel) for ds, sel in groups.items()}


def test_the_planted_circuit_separates_the_rules(planted):
    """Precondition, by plain arithmetic on EPE_0: σ (either std) picks one coordinate, top-3 three."""
    _, hf, _, _ = planted
    m = ref.PaperGPT2(hf)
    epe0 = m.epe(m.wpe[:1])[0].tolist()
    a = [abs(x) for x in epe0]
    assert [
        i for i, x in enumerate(a) if x > statistics.fmean(a) + 3 * statistics.pstdev(a)
    ] == SIGMA
    assert ref.gamma_coords(epe0) == SIGMA and m.top3(epe0) == PLANT


def test_intervene_paper_preset_is_the_papers_code(planted, tmp_path):
    """The output contract: ``intervene --inputs paper-csv:CSV --preset paper`` and no other flag
    (but --quiet) gives every table1.csv mean of (a)..(j), per dataset and layer scope, within
    2e-6 of the paper's procedure; (i) zeroed the top-3 |EPE_0| and (j) the paper's draw, both
    recorded. ``--coords-rule sigma`` is sinkscope's rule: (i) on the one σ coordinate."""
    from sinkscope.cli import main

    d, hf, ids_list, f = planted
    m = ref.PaperGPT2(hf)
    want = ref.paper_table1(m, ids_list)
    out = tmp_path / "iv"
    assert (
        main(
            [
                "intervene",
                "--model",
                str(d),
                "--inputs",
                f"paper-csv:{f}",
                "--preset",
                "paper",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    t = pd.read_csv(out / "table1.csv")
    worst = 0.0
    for rid in "abcdefghij":
        for k, scope in enumerate(("mid", "all")):
            exp = _by_dataset([x[k] for x in want[rid]], ids_list)
            for ds, v in exp.items():
                got = t[(t.intervention == rid) & (t.dataset == ds) & (t.scope == scope)][
                    "mean"
                ].item()
                worst = max(worst, abs(got - v))
                assert abs(got - v) < 2e-6, (rid, ds, scope, got, v)
    print(f"max |table1.csv - paper procedure| over (a)..(j) x datasets x scopes: {worst:.2e}")
    s = json.loads((out / "summary.json").read_text())
    assert s["coords"] == PLANT and s["coords_rule"].startswith("top-3 |EPE_0|")
    j = s["interventions"]["j"]
    assert j["random_key_draw"] == "paper" and j["random_key_coords"] == {
        str(l): r for l, r in enumerate(ref.paper_random_rows(12, 64))
    }
    assert s["estimators"]["se"] == "std (ddof=1) / sqrt(n)"

    # sinkscope's σ rule for (i), on request: one coordinate, another number
    out2 = tmp_path / "iv-sigma"
    assert (
        main(
            [
                "intervene",
                "--model",
                str(d),
                "--inputs",
                f"paper-csv:{f}",
                "--out",
                str(out2),
                "--quiet",
                "--no-figures",
                "--coords-rule",
                "sigma",
            ]
        )
        == 0
    )
    s2 = json.loads((out2 / "summary.json").read_text())
    assert (
        s2["coords"] == SIGMA
        and s2["coords_rule"].startswith("EPE_0 rule")
        and "population std" in s2["coords_rule"]
    )
    t2 = pd.read_csv(out2 / "table1.csv")
    sel = (t2.intervention == "i") & (t2.dataset == "all") & (t2.scope == "mid")
    sigma_i = statistics.fmean(x[0] for x in ref.paper_table1(m, ids_list, coords_i=SIGMA)["i"])
    top3_i = statistics.fmean(x[0] for x in want["i"])
    assert abs(t2[sel]["mean"].item() - sigma_i) < 2e-6 and abs(sigma_i - top3_i) > 1e-3


def test_explain_statistics_are_the_papers(planted, tmp_path):
    """explain on the same inputs: delta_percentiles.csv's std is the population std of Δ; the
    EPE validation global median is over all positions (index 0 included), the "other positions"
    one separately; the full-block validation is causal; γ uses the paper's rule."""
    from sinkscope.cli import main

    d, hf, ids_list, f = planted
    m = ref.PaperGPT2(hf)
    out = tmp_path / "ex"
    assert (
        main(
            [
                "explain",
                "--model",
                str(d),
                "--inputs",
                f"paper-csv:{f}",
                "--out",
                str(out),
                "--quiet",
                "--no-figures",
            ]
        )
        == 0
    )
    s = json.loads((out / "summary.json").read_text())
    assert "population" in s["delta"]["std_estimator"]
    std = ref.delta_std(m, ids_list)
    pct = pd.read_csv(out / "delta_percentiles.csv")
    for r in pct.itertuples():
        assert abs(r.std - std[(r.layer, r.position)]) <= 1e-4 * (1 + std[(r.layer, r.position)]), r
    for key, full, table in (
        ("", False, "epe_validation"),
        ("validation_full_block", True, "epe_validation_full_block"),
    ):
        cos = [ref.epe_validation(m, ids, full_block=full) for ids in ids_list]
        got = s["epe"][key] if key else s["epe"]
        for name, v in ref.validation_medians(cos).items():
            assert abs(got[name] - v) < 1e-5, (key, name, got[name], v)
        med = pd.read_csv(out / f"{table}.csv")["median"]
        assert max(abs(med[j] - statistics.median(c[j] for c in cos)) for j in range(40)) < 1e-5
    assert s["epe"]["validation_full_block"]["attention"].startswith("causal")
    assert s["gamma"]["coords"] == SIGMA and "sample std" in s["coords_source"]


def test_full_block_validation_is_causal_where_the_papers_call_is_not():
    """Changing only the last token leaves index 0's full-block cos unchanged (sinkscope, and the
    reference with a causal mask); block 0's attention called without a mask, as the paper's code
    does under transformers 5, lets index 0 see the last token."""
    from conftest import tiny_model

    from sinkscope.analysis import epe_validation_full_block
    from sinkscope.models import SinkModel, adapter_for

    hf = tiny_model("gpt2")
    sm = SinkModel("t", hf, adapter_for(hf))
    ids = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(3))
    ids2 = ids.clone()
    ids2[:, -1] = (ids[:, -1] + 1) % 1000
    a, b = epe_validation_full_block(sm, ids), epe_validation_full_block(sm, ids2)
    assert (a[:, :-1] - b[:, :-1]).abs().max() < 1e-6 and (a[:, -1] - b[:, -1]).abs().max() > 1e-4
    m = ref.PaperGPT2(hf)
    for e in range(2):
        want = ref.epe_validation(m, ids[e].tolist(), full_block=True)
        assert max(abs(float(a[e, j]) - want[j]) for j in range(12)) < 1e-5

    def papers_call(x):  # LN1 -> block.attn(h) with no mask -> residual -> LN2 -> MLP -> residual
        blk = hf.transformer.h[0]
        y = x + blk.attn(blk.ln_1(x))[0]
        return y + blk.mlp(blk.ln_2(y))

    with torch.no_grad():
        p = hf.transformer.wpe.weight[:12]
        r1, r2 = (papers_call(hf.transformer.wte(i[:1]) + p) for i in (ids, ids2))
    assert (r1[0, 0] - r2[0, 0]).abs().max() > 1e-4  # index 0 changed: non-causal


def test_coordinate_rules_against_their_definitions():
    """top3, sigma (population std) and sigma-top2 (sample std, top-2 fallback) on vectors built so
    that the rules disagree, against plain-Python statements of each definition."""
    from sinkscope.analysis.facts import pick_epe_coords, resolve_rule

    base = [0.5 + i / 126 for i in range(1, 64)]
    v = torch.tensor([1.2275] + base)  # above mean + 3 population std, below mean + 3 sample std
    a = [abs(x) for x in v.tolist()]
    m = statistics.fmean(a)
    assert a[0] > m + 3 * statistics.pstdev(a) and a[0] < m + 3 * statistics.stdev(a)
    assert pick_epe_coords(v, "sigma")[0] == [0]
    got, text = pick_epe_coords(v, "sigma-top2")
    assert (
        got == ref.gamma_coords(v.tolist()) == sorted([0, 63]) and "fallback" in text
    )  # nothing passes: top-2
    assert pick_epe_coords(v, "top3")[0] == sorted(sorted(range(64), key=lambda i: -a[i])[:3])
    flat = torch.linspace(1.0, 64.0, 64)  # nothing is an outlier
    assert pick_epe_coords(flat, "sigma")[0] == [] and pick_epe_coords(flat, "sigma-top2")[0] == [
        62,
        63,
    ]
    assert (
        resolve_rule("paper", "interventions") == "top3"
        and resolve_rule("paper", "gamma") == "sigma-top2"
    )
    with pytest.raises(SinkscopeError, match="unknown"):
        resolve_rule("median", "gamma")


def test_gamma_falls_back_to_the_top2_as_the_paper(tmp_path):
    """explain on a model whose EPE_0 has no outlier: the paper's rule (default) splits γ on the
    top-2 |EPE_0| and says so; sinkscope's sigma rule skips the split with the reason."""
    from conftest import tiny_model

    from sinkscope.models import SinkModel, adapter_for
    from sinkscope.stages.explain import explain

    hf = tiny_model("gpt2")
    with torch.no_grad():
        hf.transformer.wpe.weight[0] = torch.linspace(-1.0, 1.0, 64) * torch.linspace(1.0, 2.0, 64)
        hf.transformer.h[0].mlp.c_proj.weight.zero_()
        hf.transformer.h[0].mlp.c_proj.bias.zero_()  # EPE_0 = p_0
    sm = SinkModel("t", hf, adapter_for(hf))
    want = ref.gamma_coords(hf.transformer.wpe.weight[0].tolist())
    assert len(want) == 2  # the fallback fired in the reference too
    s = explain(sm, None, progress=False).summary()
    assert s["gamma"]["coords"] == want and "the paper's fallback" in s["coords_source"]
    s2 = explain(sm, None, coords_rule="sigma", progress=False).summary()
    assert "gamma" not in s2 and any(
        "--coords-rule paper" in k["reason"] for k in s2["skipped"] if k["stage"] == "gamma"
    )


def test_the_papers_random_draw():
    """(j) as the paper's code: the same rows for every example (the seed is reset before each),
    three randint per layer in layer order, repeats and massive coordinates allowed; a layer range
    keeps those layers' rows."""
    import random

    from conftest import tiny_model

    from sinkscope.interventions import Context, RandomKeyCoords
    from sinkscope.models import SinkModel, adapter_for

    hf = tiny_model("gpt2")
    sm = SinkModel("t", hf, adapter_for(hf))
    every = list(range(64))  # all coordinates "massive": sinkscope's draw has nothing left
    ctx = Context(sm, coords=every)
    per_example = []
    for _ in range(3):
        random.seed(42)
        per_example.append({l: [random.randint(0, 63) for _ in range(3)] for l in range(3)})
    assert per_example[0] == per_example[1] == per_example[2]
    assert RandomKeyCoords(3, 42, draw="paper").draw(ctx) == per_example[0]
    assert RandomKeyCoords(3, 42, layers=[1, 2], draw="paper").draw(ctx) == {
        l: per_example[0][l] for l in (1, 2)
    }
    with pytest.raises(SinkscopeError, match="non-massive"):
        RandomKeyCoords(3, 42).validate(ctx)
    RandomKeyCoords(3, 42, draw="paper").validate(ctx)
