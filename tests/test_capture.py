"""The captured key attention equals HF's own eager ``output_attentions``, for every family."""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILIES, tiny_model

from sinkscope.metrics import KeyAttentionCapture, gu_alpha, key_attention
from sinkscope.models import adapter_for


def eager_patterns(model, ids):
    """``[batch, layer, head, q_pos, k_pos]`` straight from HF eager attention."""
    with torch.no_grad():
        out = model(ids, output_attentions=True)
    return torch.stack(out.attentions, dim=1)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("reference", [False, True], ids=["fused-lse", "chunked-reference"])
def test_key_attention_matches_eager(family, reference):
    model = tiny_model(family)
    ad = adapter_for(model)
    torch.manual_seed(1)
    ids = torch.randint(0, 1000, (4, 40))
    ref = eager_patterns(model, ids)
    impl_before = model.config._attn_implementation
    keys = (0, 1, 7)
    with torch.no_grad(), KeyAttentionCapture(ad, keys, force_reference=reference) as cap:
        logits = model(ids).logits
    assert model.config._attn_implementation == impl_before  # restored
    got = cap.stacked()  # [batch, layer, head, q_pos, key]
    want = ref[..., list(keys)]
    diff = (got - want).abs().max().item()
    print(f"{family}: max |captured - eager| over all queries and keys {keys}: {diff:.2e}")
    assert diff < 1e-6
    # the paper's BOS attention per (example, layer, head)
    bos = key_attention(got, 0)
    bos_ref = ref[:, :, :, 20:, 0].mean(-1)
    assert (bos - bos_ref).abs().max().item() < 1e-6
    # the model computes the same thing with the capture on
    with torch.no_grad():
        plain = model(ids).logits
    assert (logits - plain).abs().max().item() < 1e-4
    # attention is far from uniform in these random models, so the check is not vacuous
    assert ref[..., 0].std() > 0.05


def test_float64_capture_is_exact():
    """In float64 (where HF's GPT-2 eager path is exact too) the two agree to ~1e-15."""
    model = tiny_model("gpt2").double()
    ids = torch.randint(0, 1000, (3, 40))
    ref = eager_patterns(model, ids)
    with torch.no_grad(), KeyAttentionCapture(adapter_for(model), (0, 5)) as cap:
        model(ids)
    diff = (cap.stacked() - ref[..., [0, 5]]).abs().max().item()
    print(f"float64 max diff {diff:.1e}")
    assert diff < 1e-12


def test_gu_alpha_matches_loop():
    model = tiny_model("gpt2")
    ids = torch.randint(0, 1000, (2, 16))
    ref = eager_patterns(model, ids)
    with torch.no_grad(), KeyAttentionCapture(adapter_for(model), (0, 3)) as cap:
        model(ids)
    alpha = gu_alpha(cap.stacked(), 1, 3)
    B, L, H, T, _ = ref.shape
    for b in range(B):
        for l in range(L):
            for h in range(H):
                want = sum(ref[b, l, h, i, 3].item() for i in range(3, T)) / (T - 3)
                assert abs(alpha[b, l, h].item() - want) < 1e-6


def test_capture_rejects_key_beyond_sequence():
    from sinkscope.errors import SinkscopeError

    model = tiny_model("gpt2")
    with pytest.raises(SinkscopeError, match="outside the sequence"):
        with torch.no_grad(), KeyAttentionCapture(adapter_for(model), (0, 50)):
            model(torch.randint(0, 1000, (1, 10)))
