"""The real GPT-2 small tensors in ../shared: weight-only view, and clear errors for the rest."""

from __future__ import annotations

import pytest
import torch
from conftest import PARTIAL, needs_shared

from sinkscope.errors import MissingTensorsError
from sinkscope.models import load_model

pytestmark = needs_shared


@pytest.fixture(scope="module")
def partial():
    return load_model(str(PARTIAL))


@pytest.fixture(scope="module")
def raw():
    from safetensors.torch import load_file

    return load_file(str(PARTIAL / "partial.safetensors"))


def test_partial_adapter_view_matches_raw_tensors(partial, raw):
    ad = partial.adapter
    assert partial.partial and partial.tokenizer is None
    assert (ad.n_layers, ad.n_heads, ad.d_model, ad.d_head) == (12, 12, 768, 64)
    W_Q, b_Q, W_K, b_K = ad.W_Q, ad.b_Q, ad.W_K, ad.b_K
    assert W_Q.shape == W_K.shape == (12, 12, 768, 64) and b_Q.shape == (12, 12, 64)
    for layer in (0, 5, 11):
        w = raw[f"transformer.h.{layer}.attn.c_attn.weight"]  # Conv1D [768, 2304]: x @ w
        b = raw[f"transformer.h.{layer}.attn.c_attn.bias"]
        for h in (0, 7, 11):
            # head h's query columns are 64h..64h+63 of the first 768; keys are offset by 768
            assert torch.equal(W_Q[layer, h], w[:, 64 * h : 64 * h + 64])
            assert torch.equal(b_Q[layer, h], b[64 * h : 64 * h + 64])
            assert torch.equal(W_K[layer, h], w[:, 768 + 64 * h : 768 + 64 * h + 64])
            assert torch.equal(b_K[layer, h], b[768 + 64 * h : 768 + 64 * h + 64])
        w1, b1 = ad.ln1_params(layer)
        assert torch.equal(w1, raw[f"transformer.h.{layer}.ln_1.weight"]) and torch.equal(
            b1, raw[f"transformer.h.{layer}.ln_1.bias"]
        )
        w2, _ = ad.ln2_params(layer)
        assert torch.equal(w2, raw[f"transformer.h.{layer}.ln_2.weight"])
    assert torch.equal(ad.W_pos, raw["transformer.wpe.weight"]) and ad.W_pos.shape == (1024, 768)
    # the query bias is real (not folded, not zero)
    assert b_Q.abs().mean() > 0.1


def test_partial_forward_is_a_clear_error(partial):
    with pytest.raises(MissingTensorsError) as e:
        partial.adapter.require_forward()
    msg = str(e.value)
    assert "transformer.wte.weight" in msg
    assert (
        "transformer.h.{0..11}.mlp.c_fc.weight" in msg
        and "transformer.h.{0..11}.mlp.c_proj.weight" in msg
    )
    with pytest.raises(MissingTensorsError, match="mlp.c_fc.weight"):
        partial.adapter.mlp(0, torch.zeros(768))
    with pytest.raises(MissingTensorsError, match="wte"):
        _ = partial.adapter.W_E


def test_partial_measure_cli_exits_2(tmp_path, capsys):
    from sinkscope.cli import main

    out = tmp_path / "o"
    assert main(["measure", "--model", str(PARTIAL), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "transformer.wte.weight" in err
    assert not out.exists()
