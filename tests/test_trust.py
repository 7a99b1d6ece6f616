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
