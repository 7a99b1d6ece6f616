"""The README's Python API block runs as written (on the embedded default model, offline)."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_api_block_runs(capsys):
    text = README.read_text()
    block = re.search(r"```python\n(.*?)```", text[text.index("## Python API"):], re.S).group(1)
    scope: dict = {}
    exec(compile(block, "README.md (Python API)", "exec"), scope)
    assert tuple(scope["result"].bos_attention.shape) == (300, 6, 8)  # the shape comment in the block
    assert scope["inputs"].bos  # the embedded model's BOS rule, as `sinkscope measure`
    code = scope["result"].summary()["bos_attention"]["code"]
    assert f"code          100    {code['mean']:.3f}" in text  # the README's `sinkscope measure` printout
