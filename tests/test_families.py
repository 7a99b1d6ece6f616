"""The generic adapter and its families against HF's own eager attention, fp32 and bf16.

For every family: the captured attention to keys 0/1/7 equals ``output_attentions`` of the
eager model; the adapter's weights (with its rotary, QK-norm and fused-QKV layout) predict the
queries and keys the kernel sees; W_O / b_O reproduce the output projection; and in bf16 the
capture stays within 2e-2 of the fp32 eager reference (probabilities are kept in float32)."""

from __future__ import annotations

import pytest
import torch
from conftest import GENERIC_FAMILIES, tiny_model

from sinkscope.errors import SinkscopeError
from sinkscope.metrics import KeyAttentionCapture, key_attention
from sinkscope.models import adapter_for


def eager(model, ids):
    """``([batch, layer, head, q_pos, k_pos] patterns, logits)`` from HF eager attention."""
    with torch.no_grad():
        out = model(ids, output_attentions=True)
    return torch.stack(out.attentions, dim=1).float(), out.logits


@pytest.fixture(params=GENERIC_FAMILIES)
def generic_model(request):
    return request.param, tiny_model(request.param)


def test_capture_matches_eager_fp32(generic_model):
    family, model = generic_model
    ad = adapter_for(model)
    torch.manual_seed(1)
    ids = torch.randint(0, 1000, (3, 40))
    ref, logits_ref = eager(model, ids)
    keys = (0, 1, 7)
    with torch.no_grad(), KeyAttentionCapture(ad, keys) as cap:
        logits = model(ids).logits
    got = cap.stacked()  # [batch, layer, head, q_pos, key]
    diff = (got - ref[..., list(keys)]).abs().max().item()
    print(f"{family}: max |captured - eager| {diff:.2e}")
    assert diff < 1e-5
    # the paper's BOS attention (second-half queries to key 0)
    assert (key_attention(got, 0) - ref[:, :, :, 20:, 0].mean(-1)).abs().max().item() < 1e-5
    assert (logits - logits_ref).abs().max().item() < 1e-4  # the capture does not change the model
    assert ref[..., 0].std() > 0.02  # attention far from uniform: the check is not vacuous
    aux = cap.stacked_aux()
    if (
        ad.info().sink_logit
    ):  # GPT-OSS: eager drops the sink column, so its rows sum to 1 - sink mass
        assert aux is not None and aux.min() > 0
        assert (ref.sum(-1) + aux - 1).abs().max().item() < 1e-5
    else:
        assert aux is None


def test_adapter_predicts_kernel_queries_and_keys(generic_model):
    """W_Q, b_Q, W_K, b_K, QK-norm and rotary as the adapter reads them give exactly the q, k
    the attention kernel received; ln1 of the block input is the attention's input."""
    family, model = generic_model
    ad = adapter_for(model)
    ids = torch.randint(0, 1000, (2, 24))
    seen = {}
    hooks = []
    for l in range(ad.n_layers):
        hooks.append(
            ad.attention_module(l).register_forward_pre_hook(
                lambda m, a, kw, l=l: seen.__setitem__(
                    ("attn_in", l), (a[0] if a else kw["hidden_states"]).detach()
                ),
                with_kwargs=True,
            )
        )
        hooks.append(
            ad.layers()[l].register_forward_pre_hook(
                lambda m, a, kw, l=l: seen.__setitem__(
                    ("block_in", l), (a[0] if a else kw["hidden_states"]).detach()
                ),
                with_kwargs=True,
            )
        )
    try:
        with torch.no_grad(), KeyAttentionCapture(ad, (0,), record_qk=True) as cap:
            model(ids)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for l in range(ad.n_layers):
            x = seen[("attn_in", l)]
            torch.testing.assert_close(ad.ln1(l, seen[("block_in", l)]), x, atol=1e-5, rtol=1e-5)
            q, k = ad.kernel_qk(l, x)
            q_kernel, k_kernel = cap.qk[l]
            torch.testing.assert_close(q, q_kernel, atol=2e-5, rtol=1e-4)
            k_kernel = k_kernel[
                :, :: max(1, k_kernel.shape[1] // ad.n_kv_heads)
            ]  # Falcon broadcasts K to every head
            torch.testing.assert_close(k, k_kernel, atol=2e-5, rtol=1e-4)
    # GQA keys are repeated per query head in W_K
    assert ad.W_K.shape == (ad.n_layers, ad.n_heads, ad.d_model, ad.d_head)


def test_output_projection_matches_module(generic_model):
    family, model = generic_model
    ad = adapter_for(model)
    o = getattr(ad.attention_module(0), ad.o_name)
    store = {}
    h = o.register_forward_hook(lambda m, i, out: store.update(z=i[0].detach(), out=out.detach()))
    with torch.no_grad():
        model(torch.randint(0, 1000, (2, 10)))
    h.remove()
    z = store["z"].unflatten(-1, (ad.n_heads, ad.d_head))  # [batch, pos, head, d_head]
    W_O, b_O = ad.o(0)
    torch.testing.assert_close(
        torch.einsum("bphe,hed->bpd", z, W_O) + b_O, store["out"], atol=1e-5, rtol=1e-5
    )


def test_capture_in_bf16_is_close_to_fp32_eager(generic_model):
    family, model = generic_model
    torch.manual_seed(2)
    ids = torch.randint(0, 1000, (2, 40))
    ref, _ = eager(model, ids)
    model = model.to(torch.bfloat16)
    if family.startswith("falcon"):
        model.config._attn_implementation = "sdpa"
    with torch.no_grad(), KeyAttentionCapture(adapter_for(model), (0, 1)) as cap:
        model(ids)
    got = cap.stacked()
    assert got.dtype == torch.float32  # probabilities are not rounded to bf16
    diff = (key_attention(got, 0) - ref[:, :, :, 20:, 0].mean(-1)).abs().max().item()
    print(f"{family}: bf16 BOS attention vs fp32 eager: max diff {diff:.2e}")
    assert diff < 2e-2


def test_weight_edits_reach_the_model(generic_model):
    """b_Q := 0 and zeroed W_K rows change the forward pass, and are undone exactly."""
    import contextlib

    from sinkscope.interventions.base import edit_inplace

    family, model = generic_model
    ad = adapter_for(model)
    ids = torch.randint(0, 1000, (2, 16))
    with torch.no_grad():
        before = model(ids).logits
        state = {k: v.clone() for k, v in model.state_dict().items()}
        with contextlib.ExitStack() as stack:
            edit_inplace(stack, ad.key_weight_view(0), lambda v: v.__setitem__([3, 5], 0.0))
            assert (ad.W_K[0][:, [3, 5]] == 0).all()  # the view edited exactly those rows
            assert not torch.equal(model(ids).logits, before)
            if (
                family == "falcon-new"
            ):  # grouped layout: b_Q is interleaved with K and V, no live view
                with pytest.raises(SinkscopeError, match="cannot be edited in place"):
                    ad.query_bias_view(0)
                return
            bq = ad.query_bias_view(0)
            if ad.info().has_query_bias:
                edit_inplace(stack, bq, lambda v: v.__setitem__(slice(None), 0.0))
                assert (ad.b_Q[0] == 0).all()
            else:
                assert bq is None
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory, gpt2_tokenizer):
    """Each family saved as a HF directory with the genuine GPT-2 tokenizer (vocab 50257)."""
    from conftest import new_family_config
    from transformers import AutoModelForCausalLM

    out = {}
    for family in GENERIC_FAMILIES:
        torch.manual_seed(0)
        m = AutoModelForCausalLM.from_config(
            new_family_config(family, dict(vocab_size=50257, initializer_range=0.1))
        )
        with torch.no_grad():
            for name, p in m.named_parameters():
                if (
                    name.endswith("bias")
                    or "norm" in name
                    or "ln_" in name
                    or name.endswith("sinks")
                ):
                    p.add_(0.3 * torch.randn_like(p))
        d = tmp_path_factory.mktemp("families") / family
        m.save_pretrained(d)
        gpt2_tokenizer.save_pretrained(d)
        out[family] = d
    return out


TEXTS = [
    "The committee met on Tuesday to discuss the budget for next year, and after a long debate it agreed.",
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "Maria has 24 apples. She gives 7 to her brother and buys three bags of 12 more. How many now?",
]


# the CLI end to end on three families in the fast suite, every family with -m slow (the capture,
# the adapter and the edits are checked on every family in the fast suite above)
CLI_FAST = ("llama", "gpt_neox", "qwen3")


@pytest.mark.parametrize(
    "family",
    [f if f in CLI_FAST else pytest.param(f, marks=pytest.mark.slow) for f in GENERIC_FAMILIES],
)
def test_cli_measure_and_intervene_on_each_family(family, family_dirs, tmp_path):
    """The output contract: ``sinkscope measure --model DIR`` gives metrics.csv bos_attention equal
    to HF eager (second-half queries to key 0) within 1e-5; ``intervene --preset paper`` runs,
    every intervention computed or listed with its reason."""
    import json

    import pandas as pd
    from transformers import AutoModelForCausalLM

    from sinkscope.cli import main

    inputs = tmp_path / "in.jsonl"
    inputs.write_text("\n".join(json.dumps({"text": t, "domain": "nl"}) for t in TEXTS))
    common = [
        "--model",
        str(family_dirs[family]),
        "--inputs",
        f"jsonl:{inputs}:text",
        "--max-tokens",
        "20",
        "--quiet",
    ]
    assert main(["measure", *common, "--out", str(tmp_path / "m")]) == 0
    ids = torch.tensor(
        [
            json.loads(l)["token_ids"]
            for l in (tmp_path / "m" / "inputs.jsonl").read_text().splitlines()
        ]
    )
    hf = AutoModelForCausalLM.from_pretrained(
        family_dirs[family], attn_implementation="eager"
    ).eval()
    ref, _ = eager(hf, ids)
    want = ref[:, :, :, ids.shape[1] // 2 :, 0].mean(-1)  # [example, layer, head]
    df = pd.read_csv(tmp_path / "m" / "metrics.csv").sort_values(["example", "layer", "head"])
    got = torch.tensor(df["bos_attention"].to_numpy()).view(want.shape)
    assert (got - want).abs().max().item() < 1e-5
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert ("sink_logit_mass" in summary) == (family == "gpt_oss")
    if (
        family == "gpt_oss"
    ):  # the sink logit's mass beside index 0's: every query's mass adds up to 1
        mass = torch.tensor(df["sink_logit_mass"].to_numpy()).view(want.shape)
        rest = 1 - ref.sum(-1)[:, :, :, ids.shape[1] // 2 :].mean(-1)
        assert (mass - rest).abs().max().item() < 1e-5

    # bf16: within 2e-2 of the fp32 eager reference, the dtype recorded
    assert main(["measure", *common, "--dtype", "bfloat16", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["dtype"] == "bfloat16"
    bf = pd.read_csv(tmp_path / "b" / "metrics.csv").sort_values(["example", "layer", "head"])
    assert (
        torch.tensor(bf["bos_attention"].to_numpy()).view(want.shape) - want
    ).abs().max().item() < 2e-2

    assert main(["intervene", *common, "--preset", "paper", "--out", str(tmp_path / "i")]) == 0
    s = json.loads((tmp_path / "i" / "summary.json").read_text())
    cells = s["interventions"]
    assert len(cells) >= 8
    for cid, c in cells.items():
        assert c["applicable"] or c["reason"], (cid, c)
    assert cells["a"]["applicable"]


UNLISTED = {  # decoders no family names: the generic adapter reads them off their modules
    "stablelm": lambda T, kw: T.StableLmConfig(num_key_value_heads=2, **kw),
    "starcoder2": lambda T, kw: T.Starcoder2Config(num_key_value_heads=2, **kw),
    "granite": lambda T, kw: T.GraniteConfig(num_key_value_heads=2, **kw),
}


@pytest.mark.parametrize("name", sorted(UNLISTED))
def test_unlisted_decoders_get_the_generic_adapter(name):
    import transformers as T

    from sinkscope.models.generic import GenericAdapter

    kw = dict(
        vocab_size=1000,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        initializer_range=0.1,
    )
    torch.manual_seed(0)
    m = T.AutoModelForCausalLM.from_config(
        UNLISTED[name](T, kw), attn_implementation="eager"
    ).eval()
    ad = adapter_for(m)
    assert type(ad) is GenericAdapter and ad.info().family == name
    ids = torch.randint(0, 1000, (2, 30))
    ref, _ = eager(m, ids)
    with torch.no_grad(), KeyAttentionCapture(ad, (0, 3)) as cap:
        m(ids)
    assert (cap.stacked() - ref[..., [0, 3]]).abs().max().item() < 1e-5


def test_refused_architectures_say_why(tmp_path, capsys):
    """Attention outside the interface (BLOOM's ALiBi baddbmm) and blocks without attention
    (Mamba): one line, exit 2, the reason named."""
    import transformers as T

    from sinkscope.cli import main
    from sinkscope.data.tokenizers import offline_gpt2_tokenizer

    tok = offline_gpt2_tokenizer()
    text = tmp_path / "in.txt"
    text.write_text(
        "The committee met on Tuesday to discuss the budget for next year, and agreed to fund it all.\n"
    )
    for name, cfg, why in (
        (
            "bloom",
            T.BloomConfig(vocab_size=50257, hidden_size=32, n_layer=1, n_head=2),
            "cannot capture its attention",
        ),
        (
            "mamba",
            T.MambaConfig(vocab_size=50257, hidden_size=32, num_hidden_layers=1),
            "no attention module",
        ),
    ):
        d = tmp_path / name
        T.AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
        tok.save_pretrained(d)
        capsys.readouterr()
        rc = main(
            [
                "measure",
                "--model",
                str(d),
                "--inputs",
                f"text:{text}",
                "--max-tokens",
                "8",
                "--out",
                str(tmp_path / f"o-{name}"),
                "--quiet",
            ]
        )
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and why in err, err
        assert not (tmp_path / f"o-{name}").exists()


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device here: the GPU path (memory-efficient attention with lse) runs where one exists",
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("family", ["llama", "gpt_neox", "gemma2", "gpt_oss"])
def test_cuda_capture_matches_eager(family, dtype):
    model = tiny_model(family)
    ids = torch.randint(0, 1000, (2, 64))
    ref, _ = eager(model, ids)  # fp32 eager on the CPU
    model = model.to("cuda", dtype)
    with torch.no_grad(), KeyAttentionCapture(adapter_for(model), (0, 1)) as cap:
        model(ids.cuda())
    got = cap.stacked().cpu()
    assert got.dtype == torch.float32
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert (got - ref[..., [0, 1]]).abs().max().item() < tol
