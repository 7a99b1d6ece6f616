"""The embedded default model (issue 6): a GPT-2 trained by ``sinkscope train`` with a clear sink."""

from __future__ import annotations

import json

import torch

from sinkscope import load_inputs, load_model, measure
from sinkscope.models.loading import embedded_model_dir


def test_embedded_default_is_a_small_gpt2_with_an_unmistakable_sink():
    d = embedded_model_dir()
    size = sum(p.stat().st_size for p in d.iterdir())
    assert size <= 20 * 2**20, size
    m = load_model()  # no spec: the embedded model
    assert type(m.hf).__name__ == "GPT2LMHeadModel" and m.adapter.family == "gpt2"
    assert m.wants_bos  # trained with <|endoftext|> opening every window
    info = json.loads((d / "training.json").read_text())
    assert info["command"].startswith("sinkscope train")
    ti = load_inputs("default", m.tokenizer, per_domain=30, prepend_bos=True)
    s = measure(m, ti, progress=False).summary()
    band = s["bos_attention"]["all"]["mean"]
    print(
        f"embedded default: BOS attention {band:.3f} (training readout {info['final']['sink']:.3f}); uniform {s['uniform_baseline']:.3f}"
    )
    assert band >= 0.3 > 5 * s["uniform_baseline"] / 2
    # the same number the training run recorded, within sampling noise of the two text sets
    assert abs(band - info["final"]["sink"]) < 0.1
    # it is a language model: it predicts the texts far better than chance (ln 2048 = 7.6 nats);
    # the token right after <|endoftext|> is not scored (training did not score it either)
    with torch.no_grad():
        logits = m.hf(ti.ids).logits
    ce = torch.nn.functional.cross_entropy(
        logits[:, 1:-1].reshape(-1, logits.shape[-1]), ti.ids[:, 2:].reshape(-1)
    ).item()
    assert ce < 0.6 * torch.log(torch.tensor(float(len(m.tokenizer)))).item(), ce


def test_main_command_runs_offline(tmp_path, capsys):
    """The README's main command, exactly: no model, no inputs."""
    from sinkscope.cli import main

    out = tmp_path / "m"
    assert main(["measure", "--out", str(out), "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["n_examples"] == 300 and set(s["bos_attention"]) == {"all", "nl", "math", "code"}
    assert s["bos_attention"]["all"]["mean"] >= 0.3
    assert "BOS attention" in capsys.readouterr().out
