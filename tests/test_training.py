"""``sinkscope train``: the variants are what they say, the capture is exact on them, and training
is deterministic and resumable."""

from __future__ import annotations

import json

import pytest
import torch

from sinkscope.metrics import KeyAttentionCapture
from sinkscope.models import adapter_for, load_model
from sinkscope.models.sinkgpt import (
    NORMALISERS,
    POSITIONS,
    SinkGPTConfig,
    SinkGPTForCausalLM,
    apply_rope,
    rope_cos_sin,
)
from sinkscope.training import TrainConfig, train
from sinkscope.training.recipe import tiny_texts

TINY = dict(
    n_layer=2,
    n_embd=32,
    n_head=4,
    context=40,
    batch=4,
    steps=4,
    vocab=300,
    eval_every=2,
    ckpt_every=2,
    warmup=2,
)


def _random(cfg: SinkGPTConfig, seed=0, scale=0.3):
    torch.manual_seed(seed)
    m = SinkGPTForCausalLM(cfg).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            p.normal_(0, scale)
        if not cfg.query_bias:
            for blk in m.transformer.h:
                blk.attn.c_attn.bias[: cfg.n_embd] = 0
    return m


def naive_attention(m: SinkGPTForCausalLM, ids: torch.Tensor) -> list[torch.Tensor]:
    """Reference: per layer, per head, per query, the attention row from an explicit loop over
    queries with the normaliser written out (float64), and the logits from running those rows."""
    cfg = m.config
    d, H = cfg.n_embd, cfg.n_head
    dh = d // H
    m = m.double()
    x = m.transformer.wte(ids)
    T = ids.shape[1]
    if cfg.positions == "learned":
        x = x + m.transformer.wpe.weight[:T]
    cos, sin = rope_cos_sin(T, dh, cfg.rope_theta, x.device, x.dtype)
    rows = []
    for blk in m.transformer.h:
        a = blk.attn
        h = blk.ln_1(x)
        qkv = h @ a.c_attn.weight + a.c_attn.bias
        q, k, v = qkv.split(d, dim=-1)
        q, k, v = (
            t.view(*t.shape[:2], H, dh).transpose(1, 2) for t in (q, k, v)
        )  # [batch, head, pos, dh]
        if cfg.positions == "rotary":
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        P = torch.zeros(ids.shape[0], H, T, T, dtype=x.dtype)
        for i in range(T):
            s = (q[:, :, i : i + 1] @ k[:, :, : i + 1].transpose(-1, -2))[
                :, :, 0
            ] / dh**0.5  # [batch, head, i+1]
            z = torch.exp(s).sum(-1, keepdim=True)
            if cfg.normaliser == "off_by_one":
                z = z + 1.0
            elif cfg.normaliser == "sink_logit":
                z = z + torch.exp(a.sinks)[None, :, None]
            P[:, :, i, : i + 1] = torch.exp(s) / z
        o = (P @ v).transpose(1, 2).reshape(ids.shape[0], T, d)
        if cfg.normaliser == "gated":
            o = o * torch.sigmoid(h @ a.gate.weight + a.gate.bias)
        x = x + o @ a.c_proj.weight + a.c_proj.bias
        if cfg.mlp:
            x = x + blk.mlp(blk.ln_2(x))
        rows.append(P)
    return rows, m.lm_head(m.transformer.ln_f(x))


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("normaliser", NORMALISERS)
def test_variant_forward_and_capture_match_naive_loop(positions, normaliser):
    cfg = SinkGPTConfig(
        vocab_size=50,
        n_positions=16,
        n_embd=32,
        n_layer=2,
        n_head=4,
        positions=positions,
        normaliser=normaliser,
        query_bias=positions != "none",
        mlp=normaliser != "gated",
    )
    m = _random(cfg)
    ids = torch.randint(0, 50, (3, 12))
    with torch.no_grad():
        logits = m(ids).logits
        with KeyAttentionCapture(adapter_for(m), keys=(0, 1)) as cap:
            logits_cap = m(ids).logits
        probs = cap.stacked()  # [batch, layer, head, q_pos, key]
        ref_rows, ref_logits = naive_attention(m, ids)
    ref = torch.stack(ref_rows, 1)[..., :2]
    diff = (probs.double() - ref).abs().max().item()
    print(
        f"{positions}/{normaliser}: max |capture - naive| = {diff:.2e}, logits {(logits.double() - ref_logits).abs().max():.2e}"
    )
    assert diff < 2e-6
    assert torch.allclose(logits.double(), ref_logits, atol=2e-4)
    assert torch.allclose(logits_cap, logits, atol=2e-5)


def test_gpt2_switches_give_a_plain_gpt2():
    from transformers import GPT2LMHeadModel

    cfg = SinkGPTConfig(vocab_size=60, n_positions=20, n_embd=32, n_layer=2, n_head=4)
    m = _random(cfg)
    g = GPT2LMHeadModel(cfg.to_gpt2_config()).eval()
    missing, unexpected = g.load_state_dict(m.state_dict(), strict=False)
    assert not unexpected
    ids = torch.randint(0, 60, (2, 20))
    with torch.no_grad():
        assert torch.equal(g(ids).logits, m(ids).logits)


def test_alternative_normalisers_reduce_to_softmax():
    base = SinkGPTConfig(vocab_size=40, n_positions=16, n_embd=32, n_layer=2, n_head=4)
    ref = _random(base)
    ids = torch.randint(0, 40, (2, 10))
    want = ref(ids).logits
    sl = SinkGPTForCausalLM(SinkGPTConfig(**{**base.to_dict(), "normaliser": "sink_logit"})).eval()
    sl.load_state_dict(ref.state_dict(), strict=False)
    with torch.no_grad():
        for blk in sl.transformer.h:
            blk.attn.sinks.fill_(-1e4)  # a sink logit of -inf is plain softmax
    torch.testing.assert_close(sl(ids).logits, want, atol=1e-5, rtol=0)
    g = SinkGPTForCausalLM(SinkGPTConfig(**{**base.to_dict(), "normaliser": "gated"})).eval()
    g.load_state_dict(ref.state_dict(), strict=False)
    with torch.no_grad():
        for blk in g.transformer.h:
            blk.attn.gate.weight.zero_()
            blk.attn.gate.bias.fill_(1e4)  # an open gate is plain softmax attention
    torch.testing.assert_close(g(ids).logits, want, atol=1e-5, rtol=0)
    ob = SinkGPTForCausalLM(SinkGPTConfig(**{**base.to_dict(), "normaliser": "off_by_one"})).eval()
    ob.load_state_dict(ref.state_dict(), strict=False)
    assert not torch.allclose(
        ob(ids).logits, want, atol=1e-3
    )  # the extra zero logit does change it


def _train(tmp_path, name, **kw):
    cfg = TrainConfig(**{**TINY, **kw})
    return train(cfg, tmp_path / name, data=tiny_texts(), progress=False), tmp_path / name


def test_no_bq_variant_keeps_bq_exactly_zero_and_no_pos_has_no_positions(tmp_path):
    r, d = _train(tmp_path, "nobq", query_bias=False, steps=6, weight_decay=0.5)
    m = load_model(str(d))
    assert m.adapter.info().has_query_bias is False
    raw = torch.stack([blk.attn.c_attn.bias[:32] for blk in m.hf.transformer.h])
    assert torch.count_nonzero(raw) == 0 and torch.count_nonzero(m.adapter.b_Q) == 0
    assert (
        torch.count_nonzero(m.hf.transformer.h[0].attn.c_attn.bias[32:]) > 0
    )  # K, V biases did train
    r, d = _train(tmp_path, "nopos", positions="none", steps=2)
    m = load_model(str(d))
    assert not [n for n, _ in m.hf.named_parameters() if "wpe" in n or "pos" in n]
    assert m.adapter.W_pos is None and m.adapter.info().positional == "none"
    r, d = _train(tmp_path, "nomlp", mlp=False, steps=2)
    assert not [n for n, _ in load_model(str(d)).hf.named_parameters() if "mlp" in n or "ln_2" in n]


def test_full_variant_is_saved_as_gpt2(tmp_path):
    r, d = _train(tmp_path, "full")
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model_type"] == "gpt2"
    m = load_model(str(d))
    assert type(m.hf).__name__ == "GPT2LMHeadModel" and m.tokenizer is not None
    assert r["final"]["sink"] is not None and 0 <= r["final"]["sink"] <= 1


def test_training_is_deterministic_and_resumable(tmp_path, monkeypatch):
    a, _ = _train(tmp_path, "a")
    b, _ = _train(tmp_path, "b")
    assert a["losses"] == b["losses"] and len(a["losses"]) == TINY["steps"]
    import sinkscope.training.recipe as recipe

    real = recipe.sample_windows

    def interrupt_at_3(streams, batch, T, seed, step, bos_id, weights=None):
        if step == 3 and batch == TINY["batch"]:
            raise KeyboardInterrupt
        return real(streams, batch, T, seed, step, bos_id, weights)

    monkeypatch.setattr(recipe, "sample_windows", interrupt_at_3)
    cfg = TrainConfig(**TINY)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "c", data=tiny_texts(), progress=False)
    assert (tmp_path / "c" / "checkpoint.pt").exists() and not (
        tmp_path / "c" / "config.json"
    ).exists()
    monkeypatch.setattr(recipe, "sample_windows", real)
    c = train(cfg, tmp_path / "c", data=tiny_texts(), progress=False, resume=True)
    assert c["losses"] == a["losses"]
    with pytest.raises(Exception, match="--resume"):
        train(cfg, tmp_path / "c", data=tiny_texts(), progress=False)


def test_train_cli(tmp_path, capsys):
    from sinkscope.cli import main

    data = tmp_path / "d.txt"
    data.write_text("\n\n".join(t for ts in tiny_texts().values() for t in ts))
    out = tmp_path / "run"
    args = [
        "train",
        "--out",
        str(out),
        "--data",
        f"text:{data}",
        "--layers",
        "1",
        "--width",
        "16",
        "--heads",
        "2",
        "--context",
        "40",
        "--batch",
        "2",
        "--steps",
        "2",
        "--vocab",
        "300",
        "--quiet",
    ]
    assert main(args) == 0
    assert "validation loss" in capsys.readouterr().out
    assert (
        main(
            [
                "measure",
                "--model",
                str(out),
                "--inputs",
                f"text:{data}",
                "--out",
                str(tmp_path / "m"),
                "--quiet",
                "--no-figures",
            ]
        )
        == 0
    )
    assert main(args) == 2  # exists: needs --resume or --force
    assert "--resume" in capsys.readouterr().err
    assert main(args[:-1] + ["--width", "15", "--force", "--quiet"]) == 2
    assert "--width" in capsys.readouterr().err
    assert (
        main(["train", "--out", str(tmp_path / "x"), "--data", "text:/nonexistent.txt", "--quiet"])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_zoo_trains_analyses_and_reuses_runs(tmp_path):
    from sinkscope.studies.zoo import run_zoo

    base = TrainConfig(**{**TINY, "vocab": 400})
    r = run_zoo(
        tmp_path / "zoo",
        seeds=(0,),
        variants=("full", "no_pos", "sink_logit"),
        base=base,
        progress=False,
        per_domain=8,
    )
    t = r.table()
    assert list(t.variant) == ["full", "no_pos", "sink_logit"]
    assert set(r.runs.domain) == {"all", "nl", "math", "code"}
    full = r.runs[(r.runs.variant == "full") & (r.runs.domain == "all")].iloc[0]
    direct = json.loads((tmp_path / "zoo" / "full-s0" / "training.json").read_text())
    assert full.val_loss == pytest.approx(direct["final"]["val_loss"])
    assert (
        r.runs[r.runs.variant == "no_pos"].epe_massive.iloc[0] == "-"
    )  # no learned positions: no EPE
    for f in ("zoo.csv", "zoo.md", "zoo_sink.png", "zoo_loss_vs_sink.png", "zoo_training.png"):
        assert (tmp_path / "zoo" / f).stat().st_size > 0
    stamp = (tmp_path / "zoo" / "full-s0" / "training.json").stat().st_mtime_ns
    r2 = run_zoo(
        tmp_path / "zoo", seeds=(0,), variants=("full",), base=base, progress=False, per_domain=8
    )
    assert (
        tmp_path / "zoo" / "full-s0" / "training.json"
    ).stat().st_mtime_ns == stamp  # reused, not retrained
    assert r2.runs.bos_attention.iloc[0] == pytest.approx(full.bos_attention)


def test_zoo_cli_rejects_unknown_variants(tmp_path, capsys):
    from sinkscope.cli import main

    assert main(["zoo", "--variants", "full,bogus", "--out", str(tmp_path / "z"), "--quiet"]) == 2
    assert "bogus" in capsys.readouterr().err and not (tmp_path / "z").exists()


def test_force_restart_fits_a_new_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    _, d = _train(tmp_path, "run", steps=1, vocab=330)
    small = len(AutoTokenizer.from_pretrained(str(d)))
    train(
        TrainConfig(**{**TINY, "steps": 1, "vocab": 350}),
        d,
        data=tiny_texts(),
        progress=False,
        force=True,
    )
    tok = AutoTokenizer.from_pretrained(str(d))
    assert len(tok) > small  # not the first run's tokenizer, left behind in run/tokenizer
    assert (
        load_model(str(d)).hf.config.vocab_size
        == len(tok)
        == len(AutoTokenizer.from_pretrained(str(d / "tokenizer")))
    )
