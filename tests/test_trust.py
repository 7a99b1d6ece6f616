"""Trust: no prompt ever runs a model's code. A model directory whose config (or tokenizer
config) names Python code of its own (``auto_map``) is refused before transformers reads it, on
every path that loads a model, even when stdin would answer "y" to transformers' prompt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EVIL = """
from pathlib import Path
Path({marker!r}).write_text("the model's code ran")
from transformers import GPT2Config as EvilConfig, GPT2LMHeadModel as EvilModel  # noqa: E402
"""


def _evil_dir(src: Path, dst: Path, marker: Path, where: str) -> Path:
    import shutil

    shutil.copytree(src, dst)
    (dst / "evil.py").write_text(EVIL.format(marker=str(marker)))
    f = dst / where
    cfg = json.loads(f.read_text())
    cfg["auto_map"] = (
        {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
        if where == "config.json"
        else {"AutoTokenizer": ["evil.EvilConfig", None]}
    )
    f.write_text(json.dumps(cfg))
    return dst


COMMANDS = [
    ["measure", "--per-domain", "2", "--quiet"],
    ["explain", "--weights-only", "--quiet"],
    ["reproduce", "--per-domain", "2", "--quiet", "--skip", "interventions,mitigate"],
    ["compare", "--per-domain", "2", "--quiet"],
]


@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
@pytest.mark.parametrize("cmd", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_auto_map_is_refused_even_when_stdin_says_yes(cmd, where, tiny_gpt2_dir, tmp_path):
    marker = tmp_path / "PWNED"
    model = _evil_dir(tiny_gpt2_dir, tmp_path / "model", marker, where)
    flag = ["--models", f"default,{model}"] if cmd[0] == "compare" else ["--model", str(model)]
    p = subprocess.run(
        [sys.executable, "-m", "sinkscope", *cmd, *flag, "--out", str(tmp_path / "o")],
        input="y\ny\ny\n",
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        cwd=tmp_path,
        timeout=300,
    )
    assert p.returncode == 2, p.stderr[-2000:]
    assert "auto_map" in p.stderr and "never runs a model's code" in p.stderr, p.stderr
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_the_python_api_refuses_it_too(tiny_gpt2_dir, tmp_path, monkeypatch):
    import sinkscope
    from sinkscope.errors import SinkscopeError

    marker = tmp_path / "PWNED"
    model = _evil_dir(tiny_gpt2_dir, tmp_path / "model", marker, "config.json")
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("y\n" * 5))
    with pytest.raises(SinkscopeError, match="auto_map"):
        sinkscope.load_model(str(model))
    assert not marker.exists()


def test_every_transformers_load_says_trust_remote_code_false():
    """Each ``from_pretrained`` call in sinkscope passes ``trust_remote_code=False`` (by name or
    through ``NO_REMOTE_CODE``), so no load path can reach transformers' prompt."""
    import ast

    src = Path(__file__).resolve().parents[1] / "src" / "sinkscope"
    missing = []
    for p in src.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr != "from_pretrained":
                continue
            said = any(k.arg == "trust_remote_code" for k in node.keywords) or any(
                k.arg is None and getattr(k.value, "id", "") == "NO_REMOTE_CODE"
                for k in node.keywords
            )
            if not said:
                missing.append(f"{p.relative_to(src)}:{node.lineno}")
    assert not missing, missing


# ---- sizes checked against the weights' own headers before anything is built -------------------


def _lying_config(src: Path, dst: Path, **changes) -> Path:
    import shutil

    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps(cfg | changes))
    return dst


def _partial_with_block(dst: Path, block: int) -> Path:
    """A tiny safetensors file whose tensor names mention ``block`` (its header lies)."""
    import torch
    from safetensors.torch import save_file

    t = {
        "transformer.wpe.weight": torch.zeros(8, 16),
        "transformer.h.0.attn.c_attn.weight": torch.zeros(16, 48),
        f"transformer.h.{block}.attn.c_attn.weight": torch.zeros(16, 48),
    }
    save_file(t, str(dst))
    return dst


LIES = [
    ("n_layer", 1_000_000, "claims 1,000,000 layers"),
    ("n_layer", 7, "says 7 layers but its weights hold blocks 0..2"),
    ("n_embd", 96, "residual width 96 is no dimension of its weights"),
    ("n_positions", 10**9, "claims 1,000,000,000 positions"),
    ("vocab_size", 10**9, "claims 1,000,000,000 vocabulary"),
]


@pytest.mark.parametrize("key,value,phrase", LIES, ids=[f"{k}={v}" for k, v, _ in LIES])
@pytest.mark.parametrize("cmd", ["measure", "explain"])
def test_a_config_that_lies_about_its_sizes_is_one_line_before_anything_is_built(
    key, value, phrase, cmd, tiny_gpt2_dir, tmp_path
):
    import time

    model = _lying_config(tiny_gpt2_dir, tmp_path / "m", **{key: value})
    t0 = time.perf_counter()
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "sinkscope",
            cmd,
            "--model",
            str(model),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    took = time.perf_counter() - t0
    assert p.returncode == 2 and phrase in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert not (tmp_path / "o").exists()
    assert took < 30, took  # a process start; the minutes of building 10^6 blocks are gone


def test_the_api_checks_sizes_too(tiny_gpt2_dir, tmp_path):
    import sinkscope
    from sinkscope.errors import SinkscopeError

    model = _lying_config(tiny_gpt2_dir, tmp_path / "m", n_layer=1_000_000)
    with pytest.raises(SinkscopeError, match="claims 1,000,000 layers"):
        sinkscope.load_model(str(model))


def test_a_partial_checkpoint_naming_block_5_million_builds_nothing(tmp_path, capsys):
    from sinkscope.cli import main

    f = _partial_with_block(tmp_path / "p.safetensors", 5_000_000)
    assert f.stat().st_size < 40_000
    assert main(["explain", "--weights-only", "--model", str(f), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "mentions block 5000000" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_a_truncated_safetensors_header_is_one_line(tiny_gpt2_dir, tmp_path, capsys):
    import shutil

    from sinkscope.cli import main

    d = tmp_path / "m"
    shutil.copytree(tiny_gpt2_dir, d)
    (d / "model.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{")
    assert main(["measure", "--model", str(d), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "is not a readable safetensors file" in err and err.count("\n") == 1, err


# ---- one policy for text; tokenizer files named ------------------------------------------------


def test_a_latin1_file_is_refused_by_measure_and_train_alike(tmp_path, capsys):
    from sinkscope.cli import main

    f = tmp_path / "latin.txt"
    f.write_bytes("caf\xe9 au lait is warm and sweet today\n\nanother text\n".encode("latin-1"))
    assert main(["measure", "--inputs", f"text:{f}", "--out", str(tmp_path / "o")]) == 2
    m = capsys.readouterr().err
    assert main(["train", "--data", f"text:{f}", "--steps", "2", "--out", str(tmp_path / "t")]) == 2
    t = capsys.readouterr().err
    for err in (m, t):
        assert "is not UTF-8 text (byte 0xe9 on line 1)" in err and err.count("\n") == 1, err
    assert not (tmp_path / "t").exists()


def test_a_jsonl_field_that_is_not_text_is_named(tmp_path, capsys):
    from sinkscope.cli import main

    f = tmp_path / "x.jsonl"
    f.write_text('{"text": "a fine text of some length here"}\n{"text": [1, 2]}\n')
    assert main(["measure", "--inputs", f"jsonl:{f}:text", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{f}:2: field 'text' is list, not text" in err, err


def test_a_model_directory_without_tokenizer_files_says_so(tiny_gpt2_dir, tmp_path, capsys):
    import shutil

    from sinkscope.cli import main

    d = tmp_path / "m"
    shutil.copytree(tiny_gpt2_dir, d)
    for f in d.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            f.unlink()
    assert main(["measure", "--model", str(d), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "has no tokenizer" in err and "tokenizer.json" in err and err.count("\n") == 1, err
    # a weight-only command does not need one
    assert (
        main(
            [
                "explain",
                "--weights-only",
                "--model",
                str(d),
                "--quiet",
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 0
    )
