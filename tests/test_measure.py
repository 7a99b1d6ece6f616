"""``measure`` numbers against naive per-example loops over HF eager attention."""

from __future__ import annotations

import math
import statistics

import torch
from conftest import tiny_model

from sinkscope.data import Example, TokenizedInputs, tokenize_examples
from sinkscope.metrics import layer_band, uniform_baseline
from sinkscope.models import SinkModel, adapter_for
from sinkscope.stages.measure import measure


def _eager_one(model, ids):
    with torch.no_grad():
        return torch.stack(model(ids[None], output_attentions=True).attentions, 1)[
            0
        ]  # [layer, head, q, k]


def test_measure_matches_naive_loop_including_ragged_inputs():
    hf = tiny_model("llama")
    sm = SinkModel("tiny-llama", hf, adapter_for(hf))
    torch.manual_seed(3)
    lengths = torch.tensor([20, 13, 20, 7, 16, 20])
    ids = torch.randint(0, 1000, (6, 20))
    ti = TokenizedInputs(ids, [Example("x", d) for d in "aabbab"], {}, lengths=lengths)
    r = measure(sm, ti, keys=(0, 2), batch_size=4, progress=False)  # batches mix lengths
    for i, n in enumerate(lengths.tolist()):
        att = _eager_one(hf, ids[i, :n])  # the example alone, unpadded
        bos = att[:, :, n // 2 : n, 0].mean(-1)
        to2 = att[:, :, n // 2 : n, 2].mean(-1)
        alpha0 = att[:, :, 0:n, 0].mean(-1)
        assert (torch.from_numpy(r.key_attn[i, :, :, 0]) - bos).abs().max() < 1e-6
        assert (torch.from_numpy(r.key_attn[i, :, :, 1]) - to2).abs().max() < 1e-6
        assert (torch.from_numpy(r.alpha[i, :, :, 0]) - alpha0).abs().max() < 1e-6
    s = r.summary()
    assert s["seq_len_range"] == [7, 20]
    assert math.isclose(
        s["uniform_baseline"], statistics.mean(uniform_baseline(n) for n in lengths.tolist())
    )


def test_summary_matches_plain_python():
    hf = tiny_model("gpt2")
    sm = SinkModel("tiny", hf, adapter_for(hf))
    ids = torch.randint(0, 1000, (7, 24))
    ti = TokenizedInputs(ids, [Example("x", d) for d in "aaabbbb"], {})
    r = measure(sm, ti, progress=False, eps=0.15)
    s = r.summary()
    L, H = 3, 4
    band = layer_band(L)
    per_ex = []
    for i in range(7):
        att = _eager_one(hf, ids[i])
        vals = [att[l, h, 12:, 0].mean().item() for l in range(band[0], band[1]) for h in range(H)]
        per_ex.append(sum(vals) / len(vals))
    assert math.isclose(s["bos_attention"]["all"]["mean"], statistics.mean(per_ex), abs_tol=1e-6)
    assert math.isclose(
        s["bos_attention"]["all"]["se"], statistics.stdev(per_ex) / math.sqrt(7), abs_tol=1e-6
    )
    assert math.isclose(s["bos_attention"]["b"]["mean"], statistics.mean(per_ex[3:]), abs_tol=1e-6)
    # Sink_0^eps: share of (example, layer, head) with mean attention to 0 over all queries > eps
    hits = total = 0
    for i in range(7):
        att = _eager_one(hf, ids[i])
        for l in range(L):
            for h in range(H):
                hits += att[l, h, :, 0].mean().item() > 0.15
                total += 1
    assert math.isclose(s["sink_rate"]["all"], hits / total)
    assert 0 < hits < total  # the threshold splits these heads, so the check means something


def test_keep_short_pads_right(gpt2_tokenizer):
    ex = [
        Example("one two three four five six seven eight nine ten eleven twelve", "a"),
        Example("just five tokens here ok", "a"),
        Example("no", "a"),
    ]
    ti = tokenize_examples(ex, gpt2_tokenizer, max_tokens=10, keep_short=True)
    assert ti.lengths.tolist() == [10, 5] and ti.skipped == {"a": 1} and ti.ragged
    assert ti.ids[1, :5].tolist() == gpt2_tokenizer("just five tokens here ok")["input_ids"]
