"""``sinkscope intervene``: the paper's interventions and ``--edit`` specs on batched inputs:
sink change, relocation (attention to index 1) and loss cost (paper Table 1, Fig 5).

The engine is :mod:`sinkscope.interventions.run`; the protocol (which interventions, labels,
coordinate rule, (j)'s draw, dtype) is the ``--preset``'s (:mod:`sinkscope.interventions.presets`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import SinkscopeError
from ..interventions.presets import PRESETS, get_preset
from ..interventions.run import InterventionTable
from ..registry import Stage, Step, option, register_stage
from ..report import readings, sections
from ..report.records import InterventionsRecord

if TYPE_CHECKING:
    import os

    from ..analysis.facts import CircuitFacts
    from ..data import TokenizedInputs
    from ..models import SinkModel
    from .runner import RunOptions


@dataclass
class InterveneResult(InterventionTable):
    """Table 1 of one model: ``summary()``, ``frames()``, ``write()``, ``format()``."""

    tables = {
        "table1.csv": "Table 1, every intervention × dataset × layer scope",
        "table1.md": "Table 1 as Markdown",
        "per_example.csv": "per example",
        "fig5.csv": "Fig 5 attention, per intervention",
        "inputs.jsonl": "each input's text and token ids",
    }

    def frames(self) -> dict:
        """The result's tables, by CSV name: ``table1``, ``per_example``, ``fig5``."""
        from ..interventions.run import fig5_frame

        return {
            "table1": self.table(),
            "per_example": self.per_example_frame(),
            "fig5": fig5_frame(self.fig5_maps),
        }

    def format(self) -> str:
        """The text ``sinkscope intervene`` prints."""
        return self.markdown()

    def write(
        self, out: str | os.PathLike[str], *, figures: bool = True, extra: dict | None = None
    ) -> dict[str, str]:
        """Every ``intervene`` output in ``out``: ``table1.csv`` / ``.md``, ``per_example.csv``,
        ``fig5.csv`` (the Fig 5 maps computed with the run's BOS convention, facts and seed, so
        each panel matches its Table 1 row), ``inputs.jsonl``, ``summary.json`` (plus ``extra``)
        and, with ``figures``, the PNGs; returns ``{figure file: caption}``. ``sinkscope
        intervene`` and reproduce's interventions stage both write through here."""
        from pathlib import Path

        from ..interventions.run import fig5_frame
        from ..io import write_json_atomic
        from ..report import circuit

        out = Path(out)
        table = self.table()
        table.to_csv(out / "table1.csv", index=False, float_format="%.6g")
        (out / "table1.md").write_text(
            f"# Interventions on {self.model} ({len(self.inputs)} inputs)\n\n" + self.markdown()
        )
        self.per_example_frame().to_csv(out / "per_example.csv", index=False, float_format="%.7g")
        self.inputs.write_jsonl(out / "inputs.jsonl")
        fig5_frame(self.fig5_maps).to_csv(out / "fig5.csv", index=False, float_format="%.7g")
        write_json_atomic(out / "summary.json", self.summary() | (extra or {}))
        if not figures:
            return {}
        from ..report.formats import figure_name

        grid, bars = figure_name("fig5_attention_grid"), figure_name("interventions")
        circuit.attention_grid(
            self.fig5_maps, {r.id: r.description for r in self.runs}, self.fig5_tokens, out / grid
        )
        circuit.intervention_bars(table, out / bars)
        return {
            bars: "Sink left under each intervention (red: attention to index 0; blue: to index 1, the relocation measure) and its loss cost (Δ next-token cross-entropy), ±2SE.",
            grid: "Fig 5: attention (mean over heads and band layers) on one sentence under each intervention; rows are queries, columns keys.",
        }


@register_stage
@dataclass
class InterveneConfig(Stage):
    """``sinkscope intervene`` as a stage: the preset's interventions (``paper``: the ten of
    Table 1) and ``--edit`` specs, with sink, relocation and loss cost, and Fig 5 on ``sentence``.

    >>> sorted(InterveneConfig(preset="none", edits=("half=bq:0.5",)).interventions())
    ['baseline', 'half']
    """

    preset: str = option(
        "paper",
        "--preset",
        "the protocol: " + "; ".join(f"{p.name} = {p.help}" for p in PRESETS.values()),
        choices=tuple(PRESETS),
    )
    edits: tuple[str, ...] = option(
        (),
        "--edit",
        "a custom intervention NAME=SPEC run beside the preset's, e.g. half_bq=bq:0.5@3:11 "
        "or both=bq:0+skip_mlp (the --edit language: README); repeatable",
        action="append",
        metavar="NAME=SPEC",
        shown_default="none",
    )
    seed: int = 0  # the run's --seed: (j)'s draw with --random sinkscope
    random: str | None = option(
        None,
        "--random",
        "(j)'s draw: paper = the paper's code (seed 42 "
        "before each example, randint 3 times per layer, repeats allowed); "
        "sinkscope = random.Random(--seed), 3 distinct non-massive rows per "
        "layer",
        choices=("paper", "sinkscope"),
        shown_default="the preset's: paper",
    )
    sentence: str | None = option(
        None,
        "--sentence",
        "the text of the Fig 5 attention grid",
        shown_default="the opening of A Tale of Two Cities",
        reproduce=True,
    )
    max_tokens: int = 40  # Fig 5's length, as every input's (the run's --max-tokens)

    name = "intervene"
    help = "interventions: sink change, relocation and loss cost (paper Table 1, Fig 5)"
    example = "sinkscope intervene --preset paper --edit half_bq=bq:0.5 --per-domain 10"
    record = InterventionsRecord
    steps = (
        Step(
            "interventions",
            order=50,
            overrides={"preset": "paper"},
            reads=("band", "seed", "max_tokens"),
            title="Interventions: Table 1, relocation, loss cost, Fig 5",
            reading=readings.interventions_reading,
            section=sections.interventions_section,
        ),
    )

    def interventions(self) -> dict:
        from ..interventions.spec import parse_edit

        ivs = get_preset(self.preset).interventions(self.seed, self.random)
        for item in self.edits:
            name, iv = parse_edit(item)
            if name in ivs:
                raise SinkscopeError(
                    f"--edit name '{name}' is used twice; give each edit its own NAME="
                )
            ivs[name] = iv
        return ivs

    @property
    def facts(self) -> tuple[str, ...]:
        needs_q = any("q_bar" in iv.needs for iv in self.interventions().values())
        return ("coords",) + (("q_bar",) if needs_q else ())

    def check(self) -> None:
        from ..interventions.spec import check_edit

        p = get_preset(self.preset)
        p.draw(self.random)
        names = list(p.specs)
        for e in self.edits:
            name = check_edit(e)
            if name in names:
                raise SinkscopeError(
                    f"--edit name '{name}' is used twice; give each edit its own NAME="
                )
            names.append(name)

    def settle(self, opts: RunOptions) -> None:
        """The preset decides the coordinate rule (``--sigma`` asks for sigma), (j)'s draw and
        the dtype (``paper``: float32 unless ``--dtype`` says otherwise)."""
        p = get_preset(self.preset)
        opts.coords_rule = p.coords_rule(opts.coords_rule, opts.k_sigma)
        self.random = p.draw(self.random)
        opts.dtype = p.dtype(opts.dtype)

    def compute(
        self,
        model: SinkModel,
        inputs: TokenizedInputs | None,
        facts: CircuitFacts | None = None,
        *,
        band: tuple[int, int] | None = None,
        batch_size: int = 32,
        progress: bool = True,
    ) -> InterveneResult:
        """Every intervention over ``inputs``, then the Fig 5 maps; ``facts`` (the run's
        :class:`~sinkscope.analysis.facts.CircuitFacts`) default to :func:`resolve_facts`'s."""
        import torch

        from ..analysis.facts import resolve_facts
        from ..interventions.run import attention_maps, fig5_ids, run_interventions

        ivs = self.interventions()
        if facts is None:
            facts = resolve_facts(
                model,
                inputs,
                band=band,
                batch_size=batch_size,
                progress=progress,
                q_bar=any("q_bar" in iv.needs for iv in ivs.values()),
            )
        res = run_interventions(
            model,
            inputs,
            ivs,
            coords=facts.coords,
            seed=self.seed,
            band=band,
            batch_size=batch_size,
            progress=progress,
            labels=dict(get_preset(self.preset).labels),
            cache=facts.cache(),
            result_cls=InterveneResult,
        )
        res.facts = facts.record()
        ids = fig5_ids(model, inputs, self.sentence, self.max_tokens)
        res.fig5_maps = attention_maps(
            model,
            torch.tensor(ids),
            ivs,
            res.band,
            coords=res.coords,
            seed=res.seed,
            cache=res.cache,
        )
        res.fig5_tokens = [model.tokenizer.decode([i]) for i in ids]
        return res
