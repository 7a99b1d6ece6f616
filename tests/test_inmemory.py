"""``load_model`` on a model already in memory (issue 22): it is analysed where it is (device,
dtype, mode and attention implementation untouched), and BOS attention matches HF eager
``output_attentions`` on the same token ids. Anything that is not a supported causal LM is one
clear error."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_config

from sinkscope import load_model, measure
from sinkscope.data import Example, TokenizedInputs
from sinkscope.errors import SinkscopeError
from sinkscope.models import SinkModel

TEXTS = [  # (domain, text): each longer than T tokens
    (
        "prose",
        "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden fence.",
    ),
    (
        "prose",
        "In the morning the market fills with people buying bread, fruit and fresh fish from the harbour.",
    ),
    ("code", "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(add(i, i * 2))\n"),
    (
        "code",
        "import numpy as np\nx = np.arange(12).reshape(3, 4)\nprint(x.sum(axis=0), x.mean())\n",
    ),
]
T = 16


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, initializer_range=0.1))


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=50257,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            initializer_range=0.1,
            bos_token_id=None,
            eos_token_id=None,
        )
    )


def _gpt_neo():  # sinkscope patches its own attention (no attention interface), loaded in eager
    from transformers import GPTNeoForCausalLM

    config = tiny_config("gpt_neo")
    config.vocab_size = 50257
    return GPTNeoForCausalLM(config)


BUILDERS = {"gpt2": _gpt2, "llama": _llama, "gpt_neo": _gpt_neo}


def _inputs(tok) -> TokenizedInputs:
    ids = torch.tensor([tok(text)["input_ids"][:T] for _, text in TEXTS])
    assert ids.shape == (len(TEXTS), T)
    return TokenizedInputs(ids, [Example(text, domain) for domain, text in TEXTS], {})


def _eager_bos(hf, ids: torch.Tensor) -> torch.Tensor:
    """BOS attention from HF eager ``output_attentions`` on a float32 eager copy of ``hf``:
    the second-half queries' attention to key 0, ``[example, layer, head]``."""
    ref = copy.deepcopy(hf).float()
    ref.set_attn_implementation("eager")
    with torch.no_grad():
        att = torch.stack(
            ref(ids, output_attentions=True).attentions, 1
        )  # [example, layer, head, q, k]
    return att[:, :, :, ids.shape[1] // 2 :, 0].mean(-1)


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_in_memory_bos_attention_matches_hf_eager(family, gpt2_tokenizer):
    torch.manual_seed(0)
    hf = BUILDERS[family]().eval()
    impl = hf.config._attn_implementation  # sdpa (GPT-Neo: eager), as transformers built it
    m = load_model(hf, tokenizer=gpt2_tokenizer)
    assert isinstance(m, SinkModel) and m.hf is hf and m.tokenizer is gpt2_tokenizer
    assert m.adapter.family == family and m.name == type(hf).__name__
    assert m.record()["model_source"] == {
        "kind": "in-memory",
        "class": type(hf).__name__,
        "name_or_path": None,
    }
    ti = _inputs(gpt2_tokenizer)
    got = torch.as_tensor(measure(m, ti, progress=False).bos_attention)
    want = _eager_bos(hf, ti.ids)
    diff = (got - want).abs().max().item()
    assert diff < 1e-5, f"{family}: max |sinkscope - HF eager| = {diff:.2e}"
    assert want.std() > 1e-3  # far from uniform: a wrong head or layer would show
    assert hf.config._attn_implementation == impl and not hf.training  # the capture restored it


def test_device_dtype_and_mode_are_left_as_they_are(gpt2_tokenizer):
    torch.manual_seed(0)
    hf = _llama().eval().to(torch.bfloat16)
    m = load_model(hf, tokenizer=gpt2_tokenizer)
    assert m.dtype == torch.bfloat16 and {p.dtype for p in hf.parameters()} == {torch.bfloat16}
    assert m.record()["dtype"] == "bfloat16" and m.record()["devices"] == ["cpu"]
    ti = _inputs(gpt2_tokenizer)
    diff = (
        (torch.as_tensor(measure(m, ti, progress=False).bos_attention) - _eager_bos(hf, ti.ids))
        .abs()
        .max()
        .item()
    )
    assert diff < 2e-2, f"bfloat16: max |sinkscope - float32 HF eager| = {diff:.2e}"
    assert hf.dtype == torch.bfloat16  # measuring cast nothing either
    # an explicit dtype casts it in place; "auto" is the model's own
    assert load_model(hf, dtype="auto").dtype == torch.bfloat16
    assert load_model(hf, dtype="float32").hf.dtype == torch.float32
    # training mode without dropout stays in training mode; eager attention stays eager
    from transformers import GPT2Config, GPT2LMHeadModel

    train = GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=16, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    )
    train.set_attn_implementation("eager")
    assert (
        train.training
        and load_model(train).hf.training
        and train.config._attn_implementation == "eager"
    )


def test_dropout_in_training_mode_is_refused():
    hf = _gpt2()  # nn.Module starts in training mode; GPT-2's dropout is 0.1
    with pytest.raises(
        SinkscopeError, match=r"training mode with dropout active .*model\.eval\(\)"
    ):
        load_model(hf)
    assert hf.training  # refused without changing it


def test_tokenizer_from_name_or_path_else_none(tmp_path, gpt2_tokenizer):
    from transformers import AutoModelForCausalLM

    _gpt2().save_pretrained(tmp_path / "mine")
    gpt2_tokenizer.save_pretrained(tmp_path / "mine")
    hf = AutoModelForCausalLM.from_pretrained(
        tmp_path / "mine"
    )  # eval mode, name_or_path = the directory
    m = load_model(hf)
    assert (
        m.name == "mine"
        and m.tokenizer is not None
        and m.tokenizer("a b").input_ids == gpt2_tokenizer("a b").input_ids
    )
    assert m.record()["model_source"]["name_or_path"] == str(tmp_path / "mine")
    assert (
        load_model(_gpt2().eval()).tokenizer is None
    )  # nothing to find: a model built from a config


def test_a_sinkmodel_is_returned_as_it_is(gpt2_tokenizer):
    m = load_model(_gpt2().eval(), tokenizer=gpt2_tokenizer)
    assert load_model(m) is m
    with pytest.raises(SinkscopeError, match="loaded already"):
        load_model(m, dtype="float16")


def test_what_is_not_a_supported_causal_lm_is_one_clear_error():
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    bert = BertModel(
        BertConfig(
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    )
    with pytest.raises(
        SinkscopeError,
        match=r"unsupported architecture 'bert' \(the in-memory BertModel\).*supported families.*gpt2",
    ):
        load_model(bert)
    with pytest.raises(
        SinkscopeError,
        match=r"'Linear' \(a torch\.nn\.modules\.linear\.Linear, not a transformers .*supported families",
    ):
        load_model(torch.nn.Linear(2, 2))
    with pytest.raises(
        SinkscopeError, match=r"GPT2Model, not the causal LM of 'gpt2'; pass a GPT2LMHeadModel"
    ):
        load_model(GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2)).eval())
    with pytest.raises(SinkscopeError, match="device_map"):
        load_model(_gpt2().eval(), device_map="auto")
    with pytest.raises(SinkscopeError, match="--dtype bf16"):
        load_model(_gpt2().eval(), dtype="bf16")
