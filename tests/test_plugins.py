"""Stages from outside the registry's own files: a toy stage dropped into ``sinkscope.stages``
as one new file, and the ``examples/plugin-stage`` package through its ``sinkscope.stages``
entry point. Each shows up in ``--help``, runs from the CLI, runs in ``reproduce`` and has its
section in ``report.html``; no other file changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sinkscope import registry
from sinkscope.cli import main

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "plugin-stage"
QUICK = ["--per-domain", "3", "--quiet"]
# reproduce's built-in steps that the plugin checks do not need (facts always runs)
SKIP = "measure,circuit_weights,circuit_forward,interventions,shared_query,mitigate"


def _doc_stage() -> str:
    """The complete stage of docs/contributing.md (this test runs the doc's own code)."""
    doc = (ROOT / "docs" / "contributing.md").read_text()
    return doc.split("```python\n", 1)[1].split("```", 1)[0]


TOY = _doc_stage()


@pytest.fixture
def fresh_registry():
    """Put the registry and reproduce's plan back as they were after the test."""
    from sinkscope.studies import reproduce_plan as rp

    registry.discover()  # the built-ins registered before the snapshot
    before = dict(registry._STAGES)
    yield
    registry._STAGES.clear()
    registry._STAGES.update(before)
    rp._PLAN.clear()


@pytest.fixture
def toy_stage(tmp_path, fresh_registry):
    """A new file in the stages package (its search path extended to a temp dir)."""
    import sinkscope.stages

    d = tmp_path / "more-stages"
    d.mkdir()
    (d / "toy.py").write_text(TOY)
    sinkscope.stages.__path__.append(str(d))
    registry.discover(force=True)
    yield d
    sinkscope.stages.__path__.remove(str(d))
    sys.modules.pop("sinkscope.stages.toy", None)


def _dist_info(where: Path) -> None:
    """The installed metadata of examples/plugin-stage, as ``pip install`` writes it: the entry
    points read from the example's own pyproject.toml (a wrong group, module or class there
    fails these tests)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    meta = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    eps = meta["entry-points"]["sinkscope.stages"]
    info = where / "sinkscope_head_entropy-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n"
    )
    lines = "".join(f"{k} = {v}\n" for k, v in eps.items())
    (info / "entry_points.txt").write_text(f"[sinkscope.stages]\n{lines}")


@pytest.fixture
def plugin(tmp_path, fresh_registry, monkeypatch):
    site = tmp_path / "site"
    _dist_info(site)
    for p in (str(site), str(PLUGIN)):
        monkeypatch.syspath_prepend(p)
    registry.discover(force=True)
    yield site
    sys.modules.pop("sinkscope_head_entropy", None)


def test_a_stage_in_one_new_file_is_a_command_a_reproduce_step_and_a_report_section(
    toy_stage, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "a toy stage in one file" in capsys.readouterr().out
    assert main(["toy", "--out", str(tmp_path / "t"), "--scale", "3", *QUICK]) == 0
    s = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert "toy value" in capsys.readouterr().out and s["value"] > 0
    assert main(["toy", "--scale", "x", "--out", str(tmp_path / "bad")]) == 2
    assert "--scale 'x'" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    out = tmp_path / "r"
    assert main(["reproduce", "--model", "default", "--out", str(out), "--skip", SKIP, *QUICK]) == 0
    rec = json.loads((out / "stages" / "toy" / "stage.json").read_text())
    assert rec["summary"]["value"] == pytest.approx(2 * s["value"] / 3)
    page = (out / "report.html").read_text()
    assert "The toy stage" in page and "The toy reading says" in page


def test_the_plugin_package_adds_head_entropy_to_cli_reproduce_and_report(
    plugin, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cls = registry.get_stage("head-entropy")
    assert cls.source == "sinkscope-head-entropy"
    out = tmp_path / "h"
    assert main(["head-entropy", "--model", "default", "--out", str(out), *QUICK]) == 0
    assert "mean row entropy" in capsys.readouterr().out
    got = __import__("pandas").read_csv(out / "head_entropy.csv")
    want = _naive_entropy(out)
    diff = (torch.tensor(got.sort_values(["layer", "head"]).entropy.to_numpy()) - want).abs().max()
    assert diff < 1e-4, f"max |entropy - naive eager| = {diff:.2e} nats"
    assert (out / "head_entropy.png").exists()
    r = tmp_path / "r"
    assert main(["reproduce", "--model", "default", "--out", str(r), "--skip", SKIP, *QUICK]) == 0
    page = (r / "report.html").read_text()
    assert "Attention entropy per head" in page and "nats on average" in page
    assert json.loads((r / "run.json").read_text())["stages"][-1]["name"] == "head_entropy"


def _naive_entropy(out: Path) -> torch.Tensor:
    """HF eager ``output_attentions`` on the run's own token ids, entropy by plain loops."""
    from transformers import AutoModelForCausalLM

    from sinkscope.models.loading import embedded_model_dir

    hf = AutoModelForCausalLM.from_pretrained(embedded_model_dir(), attn_implementation="eager")
    rows = (
        [json.loads(line)["token_ids"] for line in (out / "inputs.jsonl").read_text().splitlines()]
        if (out / "inputs.jsonl").exists()
        else None
    )
    if rows is None:  # the stage writes no inputs.jsonl: tokenise as the CLI does
        import sinkscope

        m = sinkscope.load_model("default")
        rows = sinkscope.load_inputs("default", m, per_domain=3).ids.tolist()
    ids = torch.tensor(rows)
    with torch.no_grad():
        att = hf(ids, output_attentions=True).attentions  # L x [batch, head, T, T]
    T = ids.shape[1]
    L, H = len(att), att[0].shape[1]
    want = torch.zeros(L, H, dtype=torch.float64)
    for layer in range(L):
        for head in range(H):
            vals = []
            for b in range(ids.shape[0]):
                per_q = []
                for q in range(T // 2, T):
                    p = att[layer][b, head, q, : q + 1].double()
                    per_q.append(float(-(p[p > 0] * p[p > 0].log()).sum()))
                vals.append(sum(per_q) / len(per_q))
            want[layer, head] = sum(vals) / len(vals)
    return want.flatten()


def test_the_entry_point_works_across_processes(tmp_path):
    """``sinkscope --help`` in a fresh interpreter finds the installed plugin by its entry point."""
    site = tmp_path / "site"
    _dist_info(site)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(site), str(PLUGIN), os.environ.get("PYTHONPATH", "")]),
    )
    r = subprocess.run(
        [sys.executable, "-m", "sinkscope", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0 and "head-entropy" in r.stdout, r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "sinkscope", "head-entropy", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "from the package sinkscope-head-entropy" in r.stdout and "--top" in r.stdout


def test_a_broken_plugin_is_reported_not_fatal(tmp_path, fresh_registry, monkeypatch, capsys):
    site = tmp_path / "site"
    info = site / "broken-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sinkscope.stages]\nbroken = no_such_module:X\n")
    monkeypatch.syspath_prepend(str(site))
    registry.discover(force=True)
    assert any("no_such_module" in e for e in registry.PLUGIN_ERRORS)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "plugins that failed to load" in capsys.readouterr().out
    registry.PLUGIN_ERRORS.clear()


BAD_PLUGINS = {  # what a careless plugin does -> what sinkscope says about it
    "shared_flag": (
        '    n: int = option(1, "--layers", "clashes with the shared flag", parse=int)\n',
        "--layers is one of the flags every stage shares",
    ),
    "study_name": ("", "'sweep' is a sinkscope command"),
    "step_clash": ('    steps = (Step("measure"),)\n', "reproduce step(s) measure already exist"),
    "no_default": ("    n: int\n", "the field 'n' has no default"),
    "builtin_name": ("", "registered twice"),
    "undecorated": ("", "decorate it with @register_stage"),
}


def _bad_plugin(site: Path, kind: str) -> None:
    body, _ = BAD_PLUGINS[kind]
    name = {"study_name": "sweep", "builtin_name": "measure"}.get(kind, f"bad-{kind}")
    deco = "" if kind == "undecorated" else "@register_stage\n"
    (site / f"bad_{kind}.py").write_text(
        "from dataclasses import dataclass\n"
        "from sinkscope.registry import Stage, Step, option, register_stage\n\n\n"
        f"{deco}@dataclass\nclass Bad(Stage):\n{body}"
        f"    name = {name!r}\n    help = 'a careless plugin'\n"
    )
    info = site / f"bad_{kind}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: bad-{kind}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[sinkscope.stages]\nbad = bad_{kind}:Bad\n")


@pytest.mark.parametrize("kind", list(BAD_PLUGINS))
def test_a_careless_plugin_is_refused_with_the_reason_and_the_cli_works(
    kind, tmp_path, fresh_registry, monkeypatch, capsys
):
    site = tmp_path / "site"
    site.mkdir()
    _bad_plugin(site, kind)
    monkeypatch.syspath_prepend(str(site))
    sys.modules.pop(f"bad_{kind}", None)
    registry.discover(force=True)
    want = BAD_PLUGINS[kind][1]
    assert any(want in e for e in registry.PLUGIN_ERRORS), registry.PLUGIN_ERRORS
    assert "bad-" + kind not in registry.stages()
    assert registry.get_stage("measure").__module__ == "sinkscope.stages.measure"
    with pytest.raises(SystemExit) as e:
        main(["measure", "--help"])
    assert e.value.code == 0
    captured = capsys.readouterr()
    assert "warning: plugin not loaded" in captured.err and want in captured.err
    registry.PLUGIN_ERRORS.clear()
    sys.modules.pop(f"bad_{kind}", None)


def test_the_shared_flag_and_command_lists_match_the_cli():
    """registry.RESERVED_FLAGS / RESERVED_COMMANDS (what check_stage refuses) are the CLI's."""
    from sinkscope.cli.main import STUDIES, build_parser

    assert set(STUDIES) == set(registry.RESERVED_COMMANDS)
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, cls in registry.stages().items():
        own = {o.flag for o in cls.options()}
        shared = {s for a in sub.choices[name]._actions for s in a.option_strings} - own
        assert shared <= set(registry.RESERVED_FLAGS), (name, shared - set(registry.RESERVED_FLAGS))


def test_option_kinds_from_the_cli(fresh_registry):
    """Repeatable flags parse each repeat, choices are checked on the parsed value, a switch
    keeps its field's default."""
    from dataclasses import dataclass

    from sinkscope.cli import build_parser
    from sinkscope.errors import SinkscopeError
    from sinkscope.registry import Stage, option, register_stage

    @register_stage
    @dataclass
    class Kinds(Stage):
        ks: tuple = option((), "--k", "repeatable ints", parse=int, action="append")
        c: int = option(1, "--c", "an int choice", parse=int, choices=(1, 2))
        on: bool = option(True, "--off", "a switch", action="store_false")
        name = "kinds"
        help = "option kinds"
        steps = ()

    p = build_parser()
    cfg = Kinds.from_cli(p.parse_args(["kinds", "--k", "1", "--k", "2", "--c", "2"]))
    assert cfg.ks == (1, 2) and cfg.c == 2 and cfg.on is True
    assert Kinds.from_cli(p.parse_args(["kinds", "--off"])).on is False
    with pytest.raises(SinkscopeError, match="--c 3: choose from 1, 2"):
        Kinds.from_cli(p.parse_args(["kinds", "--c", "3"]))
