"""``sinkscope measure`` end to end on a saved tiny GPT-2 (with the real GPT-2 tokenizer)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from sinkscope.cli import main

TEXTS = [
    "The committee met on Tuesday to discuss the budget for next year, and after a long debate it agreed to fund the new library wing.",
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\nprint([fibonacci(i) for i in range(20)])",
    "Maria has 24 apples. She gives 7 to her brother and buys three bags of 12 more. How many apples does she have now, and how many bags?",
    "Short line.",
]


@pytest.fixture
def inputs_jsonl(tmp_path):
    p = tmp_path / "inputs.jsonl"
    doms = ["nl", "code", "math", "nl"]
    p.write_text(
        "\n".join(
            json.dumps({"text": t * 2 if i < 3 else t, "domain": d})
            for i, (t, d) in enumerate(zip(TEXTS, doms))
        )
    )
    return p


def test_measure_outputs_match_eager(tmp_path, tiny_gpt2_dir, inputs_jsonl, gpt2_tokenizer, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "measure",
            "--model",
            str(tiny_gpt2_dir),
            "--inputs",
            f"jsonl:{inputs_jsonl}:text",
            "--out",
            str(out),
            "--max-tokens",
            "24",
            "--quiet",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "BOS attention" in printed and "skipped as too short: {'nl': 1}" in printed
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        ".sinkscope",
        "alpha_heatmap.png",
        "bos_by_domain.png",
        "bos_by_layer.png",
        "bos_heatmap.png",
        "inputs.jsonl",
        "metrics.csv",
        "per_layer.csv",
        "summary.json",
    ]
    df = pd.read_csv(out / "metrics.csv")
    assert {
        "example",
        "domain",
        "layer",
        "head",
        "bos_attention",
        "attn_to_1",
        "gu_alpha_0",
    } <= set(df.columns)
    assert len(df) == 3 * 3 * 4  # examples x layers x heads

    # independent reference: HF eager attention of the saved model on the same ids
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir, attn_implementation="eager").eval()
    texts = [json.loads(l)["text"] for l in inputs_jsonl.read_text().splitlines()][:3]
    ids = torch.tensor(
        [
            gpt2_tokenizer(gpt2_tokenizer.decode(gpt2_tokenizer(t)["input_ids"][:24]))["input_ids"][
                :24
            ]
            for t in texts
        ]
    )
    with torch.no_grad():
        att = torch.stack(
            hf(ids, output_attentions=True).attentions, 1
        )  # [batch, layer, head, q, k]
    want = att[:, :, :, 12:, 0].mean(-1)
    got = torch.tensor(
        df.sort_values(["example", "layer", "head"])["bos_attention"].to_numpy()
    ).view(3, 3, 4)
    assert (got - want).abs().max().item() < 1e-6

    # inputs.jsonl traces every example to its text and the exact ids the model saw
    rows = [json.loads(l) for l in (out / "inputs.jsonl").read_text().splitlines()]
    assert [r["token_ids"] for r in rows] == ids.tolist() and [r["text"] for r in rows] == texts
    s = json.loads((out / "summary.json").read_text())
    assert s["n_examples"] == 3 and s["layer_band"] == [1, 3]  # 3 layers: paper band scaled
    import hashlib

    assert s["inputs"] == {
        "spec": f"jsonl:{inputs_jsonl}:text",
        "bos": False,
        "n": 3,
        "seq_len": 24,
        "token_ids_sha256": hashlib.sha256(ids.numpy().tobytes()).hexdigest(),
    }
    assert set(s["bos_attention"]) == {"all", "nl", "code", "math"}
    # the summary's band mean is the mean over examples of the per-example band means
    # metrics.csv is written with %.7g: each cell (in [0, 1]) carries up to 5e-8 rounding error,
    # so the mean and the SE recomputed from it agree to ~1e-7, not to the float64 summary's digits
    band = df[(df.layer >= 1) & (df.layer < 3)].groupby("example")["bos_attention"].mean()
    assert abs(s["bos_attention"]["all"]["mean"] - band.mean()) < 2e-7
    assert abs(s["bos_attention"]["all"]["se"] - band.std(ddof=1) / 3**0.5) < 2e-7

    # a rerun with a baseline (another run: --force) replaces the directory atomically and
    # reports % of the baseline it read from that directory
    rc = main(
        [
            "measure",
            "--force",
            "--model",
            str(tiny_gpt2_dir),
            "--inputs",
            f"jsonl:{inputs_jsonl}:text",
            "--out",
            str(out),
            "--max-tokens",
            "24",
            "--quiet",
            "--no-figures",
            "--baseline",
            str(out / "summary.json"),
        ]
    )
    assert rc == 0
    s2 = json.loads((out / "summary.json").read_text())
    assert s2["bos_attention"]["all"]["pct_baseline"] == pytest.approx(100.0)
    assert not (out / "bos_heatmap.png").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    "case",
    [
        "missing-model",
        "unknown-arch",
        "all-short",
        "empty-file",
        "bad-layers",
        "bad-keys",
        "foreign-out",
        "bad-spec",
    ],
)
def test_bad_input_is_one_line_exit_2(case, tmp_path, tiny_gpt2_dir, capsys):
    good = tmp_path / "good.txt"
    good.write_text("word " * 100 + "\n")
    args = [
        "measure",
        "--model",
        str(tiny_gpt2_dir),
        "--inputs",
        f"text:{good}",
        "--out",
        str(tmp_path / "out"),
        "--quiet",
    ]
    expect = ""
    if case == "missing-model":
        args[2], expect = str(tmp_path / "nope"), "does not exist"
    elif case == "unknown-arch":
        from transformers import BertConfig

        d = tmp_path / "bert"
        BertConfig(num_hidden_layers=1).save_pretrained(d)
        args[2], expect = str(d), "unsupported architecture 'bert'"
    elif case == "all-short":
        short = tmp_path / "short.txt"
        short.write_text("tiny\nalso tiny\n")
        args[4], expect = f"text:{short}", "none of the 2 texts has 40 tokens"
    elif case == "empty-file":
        empty = tmp_path / "empty.jsonl"
        empty.write_text("")
        args[4], expect = f"jsonl:{empty}:text", "is empty"
    elif case == "bad-layers":
        args += ["--layers", "2:9"]
        expect = "outside the model's 3 layers"
    elif case == "bad-keys":
        args += ["--keys", "1,2"]
        expect = "must include 0"
    elif case == "foreign-out":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "precious.txt").write_text("keep me")
        expect = "not a sinkscope output"
    elif case == "bad-spec":
        args[4], expect = "csv:/x", "unknown --inputs"
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("sinkscope: error:") and expect in err, err
    if case == "foreign-out":
        assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"
    else:
        assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_console_entry_point_exit_code(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "sinkscope",
            "measure",
            "--model",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "does not exist" in r.stderr
