"""``--help`` for a newcomer: every option of every command has help text and shows its default,
every command has a one-line description and an epilog with an example that parses, every drawing
command takes ``--format`` / ``--no-figures`` (and the format reaches the files), and every term
the help uses is a heading of ``docs/glossary.md`` whose code pointers exist."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from sinkscope import registry
from sinkscope.cli import flags
from sinkscope.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY = ROOT / "docs" / "glossary.md"
# the glossary's headings (each must start one): the words --help and the outputs use
TERMS = (
    "Attention sink",
    "BOS attention",
    "Band",
    "EPE",
    "b_Q",
    "q̄",
    "γ",
    "Sink^ε",
    "Massive coordinate",
    "Δ",
    "Interventions (a)..(j)",
    "Preset",
)
STUDIES = ("reproduce", "sweep", "train", "dynamics", "zoo")
# what each drawing command needs besides --format to parse
DRAWING = {
    "measure": [],
    "explain": [],
    "intervene": [],
    "shared-query": [],
    "mitigate": [],
    "compare": ["--models", "default"],
    "reproduce": [],
    "sweep": ["--out", "x"],
    "dynamics": ["--run", "x"],
    "zoo": [],
}


@pytest.fixture
def fresh_registry():
    """The registry as it was after the test (the test registers stages of its own)."""
    registry.discover()
    before = dict(registry._STAGES)
    yield
    registry._STAGES.clear()
    registry._STAGES.update(before)


def commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def options(p: argparse.ArgumentParser):
    return [
        a
        for a in p._actions
        if a.option_strings and not isinstance(a, (argparse._HelpAction, argparse._VersionAction))
    ]


def shown_forms(default) -> set[str]:
    """How a scalar default may be written in its help: ``3.0`` as ``3`` too."""
    forms = {str(default)}
    if isinstance(default, float):
        forms.add(f"{default:g}")
    return forms


def examples(p: argparse.ArgumentParser) -> list[str]:
    return [ln.strip() for ln in (p.epilog or "").splitlines() if ln.startswith("  sinkscope ")]


def test_every_command_is_covered():
    names = set(commands())
    assert names >= set(registry.stages()) | set(STUDIES)
    assert {"measure", "explain", "intervene", "compare", "mitigate", "shared-query"} <= names


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_option_has_help_and_shows_its_default(name):
    p = commands()[name]
    fmt = p._get_formatter()
    for a in options(p):
        flag = "/".join(a.option_strings)
        assert a.help and a.help is not argparse.SUPPRESS, f"{name} {flag} has no help"
        text = fmt._expand_help(a)  # as --help prints it (%% and %(default)s expanded)
        assert len(text.split()) >= 3, f"{name} {flag}: '{text}' says too little"
        if a.nargs == 0 or a.default is None or a.default is argparse.SUPPRESS:
            continue  # a switch says what it does; no default to show
        assert "default" in text.lower(), f"{name} {flag} does not show its default ({a.default!r})"
        if isinstance(a.default, (int, float, str)) and not isinstance(a.default, bool):
            assert any(f in text for f in shown_forms(a.default)), (
                f"{name} {flag}: the default {a.default!r} is not in '{text}'"
            )


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_command_has_a_description_an_example_and_the_glossary_link(name):
    p = commands()[name]
    assert p.description and "\n" not in p.description.strip(), name
    assert p.description.strip().endswith("."), name
    assert p.epilog and p.epilog.splitlines()[-1] == flags.TERMS, name
    assert flags.TERMS == "terms: docs/glossary.md"
    ex = examples(p)
    assert ex, f"{name} --help has no example"
    page = p.format_help()
    assert "terms: docs/glossary.md" in page
    for line in ex:
        assert line in page, f"{name}: the example's line was rewrapped in --help"
        assert len(line) <= 100, f"{name}: example longer than 100 characters: {line}"
        argv = shlex.split(line, comments=True)
        assert argv[:2] == ["sinkscope", name]
        try:
            args = build_parser().parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"{name}'s example does not parse: {line}")
        assert args.command == name


def test_stage_descriptions_and_examples_come_from_the_registry(fresh_registry):
    from dataclasses import dataclass

    @registry.register_stage
    @dataclass
    class Plain(registry.Stage):
        name = "plain-help"
        help = "a stage without an example"
        steps = ()

    @registry.register_stage
    @dataclass
    class Shown(registry.Stage):
        name = "shown-help"
        help = "a stage with one"
        example = "sinkscope shown-help --per-domain 3\nsinkscope shown-help --quiet"
        steps = ()

    cmds = commands()
    assert cmds["plain-help"].description == "A stage without an example."
    assert examples(cmds["plain-help"]) == ["sinkscope plain-help"]
    assert examples(cmds["shown-help"]) == [
        "sinkscope shown-help --per-domain 3",
        "sinkscope shown-help --quiet",
    ]
    assert "examples:\n  sinkscope shown-help --per-domain 3\n" in cmds["shown-help"].format_help()


def test_a_stage_that_requires_models_offers_no_model():
    """compare names its models (--models, required): --model would be ignored, so it is absent,
    and the run options still build (args.model is None)."""
    cmds = commands()
    for name, cls in registry.stages().items():
        offered = {s for a in cmds[name]._actions for s in a.option_strings}
        if cls.multi_model == "required":
            assert "--model" not in offered and "--models" in offered, name
        else:
            assert "--model" in offered, name
    # argparse reads the prefix --model as --models: one spec is a list of one
    assert build_parser().parse_args(["compare", "--model", "default"]).models == "default"
    args = build_parser().parse_args(["compare", "--models", "default,x"])
    assert args.model is None and args.models == "default,x"
    assert flags.run_options(args).batch_size == 32
    assert build_parser().parse_args(["mitigate"]).model == "default"  # optional --models


@pytest.mark.parametrize("name", sorted(DRAWING))
def test_every_drawing_command_takes_format_and_no_figures(name):
    offered = {s for a in commands()[name]._actions for s in a.option_strings}
    assert "--format" in offered, name
    if name != "reproduce":  # reproduce's report.html is made of its figures
        assert "--no-figures" in offered, name
    args = build_parser().parse_args([name, *DRAWING[name], "--format", "svg"])
    assert args.format == "svg"  # what cli.main hands to report.formats.figure_format
    if name != "reproduce":
        args = build_parser().parse_args([name, *DRAWING[name], "--no-figures"])
        assert args.no_figures is True


def test_train_draws_no_figures():
    """train writes a model, no figure: it takes neither flag (dynamics and zoo draw)."""
    offered = {s for a in commands()["train"]._actions for s in a.option_strings}
    assert not offered & {"--format", "--no-figures"}


def test_sweep_writes_its_figures_in_the_format_given(tmp_path):
    out = tmp_path / "sweep"
    argv = ["sweep", "--models", "default", "--lengths", "24", "--per-domain", "2"]
    assert main([*argv, "--out", str(out), "--format", "svg", "--quiet"]) == 0
    svgs = sorted(f.name for f in out.glob("*.svg"))
    assert svgs and not list(out.glob("*.png")), sorted(f.name for f in out.iterdir())
    assert "data:image/svg+xml" in (out / "report.html").read_text()  # embedded as drawn


def test_zoo_writes_its_figures_in_the_format_given_or_none(tmp_path, monkeypatch):
    from sinkscope.studies import zoo
    from sinkscope.training import TrainConfig

    tiny = TrainConfig(n_layer=2, n_embd=32, n_head=4, context=40, batch=4, steps=4, vocab=400)
    monkeypatch.setattr(zoo, "budget_config", lambda budget: tiny)
    out = tmp_path / "zoo"
    argv = ["zoo", "--variants", "full", "--seeds", "0", "--out", str(out), "--quiet"]
    assert main([*argv, "--no-figures"]) == 0
    assert (out / "zoo.csv").exists() and not list(out.glob("zoo_*.png"))
    assert main([*argv, "--format", "svg"]) == 0  # the run is reused, the figures drawn
    assert {f.name for f in out.glob("zoo_*.svg")} == {
        "zoo_sink.svg",
        "zoo_loss_vs_sink.svg",
        "zoo_training.svg",
    }


def test_zoo_variants_in_the_help_are_the_zoo_s():
    from sinkscope.cli.train import ZOO_VARIANTS
    from sinkscope.studies.zoo import VARIANTS

    assert ZOO_VARIANTS == tuple(VARIANTS)


def test_the_glossary_defines_every_term_as_a_heading():
    text = GLOSSARY.read_text()
    headings = [ln.lstrip("#").strip() for ln in text.splitlines() if ln.startswith("#")]
    for term in TERMS:
        assert any(h.lower().startswith(term.lower()) for h in headings), term


def test_the_glossary_points_at_code_that_exists():
    """Each ``module.py`` (``name``, ...) pointer names a module of src/sinkscope that defines
    every name given."""
    text = GLOSSARY.read_text()
    pointers = re.findall(r"`([\w/]+\.py)`(?: \(([^)]*)\))?", text)
    assert len(pointers) >= 10
    for path, names in pointers:
        src = ROOT / "src" / "sinkscope" / path
        if path.startswith("tests/"):
            src = ROOT / path
        assert src.is_file(), path
        code = src.read_text()
        for name in re.findall(r"`([A-Za-z_][\w.]*)`", names or ""):
            last = name.split(".")[-1]
            defined = re.search(rf"^\s*(def|class) {last}\b|^{last}\b.*=", code, re.M)
            exported = re.search(rf"^from \S+ import .*\b{last}\b", code, re.M)
            assert defined or exported, f"{path} defines no {name}"
