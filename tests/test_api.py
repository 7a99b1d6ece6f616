"""The notebook API: docs/api.md runs as written, and an in-memory model gives the CLI's numbers
to the digit (``sinkscope.intervene(...).frames()["table1"]`` vs ``intervene``'s table1.csv)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_api_md_runs_as_written(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.S)
    assert len(blocks) >= 5
    ns: dict = {}
    for b in blocks:
        exec(compile(b, "docs/api.md", "exec"), ns)  # noqa: S102 - our own documentation
    out = capsys.readouterr().out
    assert "has no setting nonsense" in out and "half_bq" in out


@pytest.mark.parametrize(
    "stage, csv, frame",
    [("intervene", "table1.csv", "table1"), ("measure", "metrics.csv", "metrics")],
)
def test_in_memory_model_equals_the_cli(stage, csv, frame, tiny_gpt2_dir, gpt2_tokenizer, tmp_path):
    """The same weights in memory (``load_model(GPT2LMHeadModel)``) and from disk (the CLI)."""
    from transformers import AutoModelForCausalLM

    import sinkscope
    from sinkscope.cli import main

    extra = ["--preset", "paper"] if stage == "intervene" else []
    out = tmp_path / "cli"
    rc = main(
        [
            stage,
            "--model",
            str(tiny_gpt2_dir),
            "--per-domain",
            "3",
            "--out",
            str(out),
            "--no-figures",
            "--quiet",
            *extra,
        ]
    )
    assert rc == 0
    want = pd.read_csv(out / csv)
    hf = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval()
    model = sinkscope.load_model(hf, tokenizer=gpt2_tokenizer)
    inputs = sinkscope.load_inputs("default", model, per_domain=3)
    kw = {"preset": "paper"} if stage == "intervene" else {}
    got = getattr(sinkscope, stage)(model, inputs, progress=False, **kw).frames()[frame]
    assert list(got.columns) == list(want.columns)
    num = [c for c in got.columns if pd.api.types.is_float_dtype(got[c])]
    g, w = got[num].astype(float), want[num]
    rel = ((g - w).abs() / w.abs().clip(lower=1e-12)).fillna(0.0)  # NaN where both are NaN
    assert (g.isna() == w.isna()).all().all()
    # the CSV keeps 6 significant digits (%.6g): equal to the last digit it prints
    assert rel.max().max() <= 5e-6, f"max relative difference {rel.max().max():.2e}"
    other = [c for c in want.columns if c not in num]

    def text(df):
        return df.astype(str).replace({"nan": "", "None": ""})

    assert (text(got[other]) == text(want[other].fillna(""))).all().all()
