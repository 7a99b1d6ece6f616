"""Inputs: spec parsing, readers, the paper's truncation, the offline corpus, the paper protocol."""

from __future__ import annotations

import json
import random

import pytest
from conftest import PAPER_CSV, needs_shared

from sinkscope.data import (
    Example,
    default_corpus,
    load_inputs,
    paper_protocol,
    parse_spec,
    read_examples,
    tokenize_examples,
)
from sinkscope.errors import SinkscopeError


def test_parse_spec():
    assert parse_spec("default") == ("default", [])
    assert parse_spec("paper-csv:/a/b.csv") == ("paper-csv", ["/a/b.csv"])
    assert parse_spec("hf:stanfordnlp/sst2:train:sentence") == (
        "hf",
        ["stanfordnlp/sst2", "train", "sentence"],
    )
    for bad in ("nope:x", "jsonl:onlypath", "hf:a:b", "text:"):
        with pytest.raises(SinkscopeError):
            parse_spec(bad)


@needs_shared
def test_paper_csv_is_40_gpt2_tokens_and_unchanged(gpt2_tokenizer):
    ti = load_inputs(f"paper-csv:{PAPER_CSV}", gpt2_tokenizer, max_tokens=40)
    assert tuple(ti.ids.shape) == (300, 40) and ti.skipped == {}
    assert [ti.domains.count(d) for d in ("sst2", "gsm8k", "humaneval")] == [100, 100, 100]
    # the study's texts are already 40 GPT-2 tokens: decode-and-re-encode must leave them alone
    for row, ex in zip(ti.ids.tolist(), ti.examples):
        assert row == gpt2_tokenizer(ex.text)["input_ids"]


def test_truncation_is_decode_reencode(gpt2_tokenizer):
    long = "The quick brown fox jumps over the lazy dog near the riverbank while birds sing. " * 5
    short = "Too short."
    ex = [
        Example(long, "a"),
        Example(short, "a"),
        Example(long.upper(), "b"),
        Example(short, "b"),
        Example(short, "b"),
    ]
    ti = tokenize_examples(ex, gpt2_tokenizer, max_tokens=40)
    assert ti.skipped == {"a": 1, "b": 2} and len(ti) == 2
    first40 = gpt2_tokenizer(long)["input_ids"][:40]
    assert ti.ids[0].tolist() == gpt2_tokenizer(gpt2_tokenizer.decode(first40))["input_ids"][:40]
    with pytest.raises(SinkscopeError, match="none of the 3 texts has 40 tokens"):
        tokenize_examples([Example(short, "a")] * 3, gpt2_tokenizer, max_tokens=40)


def test_per_domain_and_bos(gpt2_tokenizer):
    long = "one two three four five six seven eight nine ten " * 6
    ex = [Example(long, "a")] * 5 + [Example(long, "b")] * 2
    ti = tokenize_examples(ex, gpt2_tokenizer, max_tokens=12, per_domain=3)
    assert ti.domains == ["a", "a", "a", "b", "b"]
    tb = tokenize_examples(ex[:1], gpt2_tokenizer, max_tokens=12, prepend_bos=True)
    assert tb.ids[0, 0].item() == gpt2_tokenizer.bos_token_id and tb.ids.shape == (1, 12)
    assert tb.ids[0, 1:].tolist() == ti.ids[0, :11].tolist()


def test_default_corpus_is_deterministic_and_long():
    a, b = default_corpus(seed=3, per_domain=20), default_corpus(seed=3, per_domain=20)
    assert [(e.domain, e.text) for e in a] == [(e.domain, e.text) for e in b]
    c = default_corpus(seed=4, per_domain=20)
    assert [e.text for e in a] != [e.text for e in c]
    assert {e.domain for e in a} == {"nl", "math", "code"}
    assert all(len(e.text) >= 250 for e in a)
    code = [e.text for e in a if e.domain == "code"]
    assert all(t.lstrip().startswith(("def ", "async def ", "@")) for t in code)


def test_default_inputs_give_100_per_domain(gpt2_tokenizer):
    ti = load_inputs("default", gpt2_tokenizer)
    assert ti.ids.shape == (300, 40) and sorted(set(ti.domains)) == ["code", "math", "nl"]
    assert load_inputs("default", gpt2_tokenizer).ids.equal(ti.ids)


def test_paper_protocol_matches_reference(gpt2_tokenizer):
    """The selection follows the study: >= T tokens, one Random(42) over the three sets, first n."""
    pools = {
        "stanfordnlp/sst2": [
            {"sentence": f"sentence {i} " + "word " * (i % 50)} for i in range(120)
        ],
        "openai/gsm8k": [
            {"question": f"question {i} " + "add three " * (i % 30)} for i in range(90)
        ],
        "openai/openai_humaneval": [
            {"prompt": f"def f{i}(x):\n" + "    return x\n" * (i % 25)} for i in range(80)
        ],
    }
    loader = lambda path, config, split: pools[path]  # noqa: E731
    got = paper_protocol(gpt2_tokenizer, n=10, max_tokens=20, seed=42, loader=loader)
    rng = random.Random(42)
    want = []
    for name, path, field in (
        ("sst2", "stanfordnlp/sst2", "sentence"),
        ("gsm8k", "openai/gsm8k", "question"),
        ("humaneval", "openai/openai_humaneval", "prompt"),
    ):
        texts = [r[field] for r in pools[path]]
        eligible = [(i, t) for i, t in enumerate(texts) if len(gpt2_tokenizer.encode(t)) >= 20]
        rng.shuffle(eligible)
        for i, t in eligible[:10]:
            want.append((name, i, gpt2_tokenizer.decode(gpt2_tokenizer.encode(t)[:20])))
    assert [(e.domain, e.meta["source_index"], e.text) for e in got] == want


def test_file_readers(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(
        json.dumps({"t": "hello", "domain": "d1"}) + "\n\n" + json.dumps({"t": "bye"}) + "\n"
    )
    ex = read_examples(f"jsonl:{p}:t")
    assert [(e.text, e.domain) for e in ex] == [("hello", "d1"), ("bye", "x")]
    with pytest.raises(SinkscopeError, match="no field 'q'"):
        read_examples(f"jsonl:{p}:q")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(SinkscopeError, match="bad.jsonl:1 is not valid JSON"):
        read_examples(f"jsonl:{bad}:t")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(SinkscopeError, match="is empty"):
        read_examples(f"text:{empty}")
    with pytest.raises(SinkscopeError, match="does not exist"):
        read_examples(f"text:{tmp_path / 'missing.txt'}")
    t = tmp_path / "lines.txt"
    t.write_text("first text\n\n  second text  \n")
    assert [e.text for e in read_examples(f"text:{t}")] == ["first text", "second text"]
