"""``sinkscope mitigate``: what does removing the sink cost? Sweep each edit's strength from 1
(the model as is) to 0 (the component removed) and record sink left vs cross-entropy added.

Edits (strength s = the fraction kept):

* ``bq``     b_Q := s·b_Q (models with a query bias);
* ``qbar``   q̄ := s·q̄, the effective query bias, any architecture;
* ``wk``     W_K rows of index 0's massive coordinates scaled by s;
* ``patch0`` index 0's residual after the creating block moved (1 - s) of the way to the others' mean.

The *most sink removed per nat* names, per model, the edit whose best point (s < 1, with at least
0.01 nats added) removes the most BOS attention per nat of cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..interventions.labels import SCALABLE, SCALABLE_TEXT
from ..parsing import name_list, parse_strengths
from ..registry import Stage, Step, option, register_stage
from ..report import sections
from ..report.records import MitigateRecord

if TYPE_CHECKING:
    import os
    from typing import Sequence

    import pandas as pd

    from ..analysis.facts import CircuitFacts
    from ..data import TokenizedInputs
    from ..interventions.base import Intervention
    from ..models import SinkModel
    from .runner import RunOptions

EDIT_TEXT = SCALABLE_TEXT  # the scalable kinds of the --edit language, s = share kept
EDITS = SCALABLE
DEFAULT_STRENGTHS = (1.0, 0.8, 0.6, 0.4, 0.2, 0.0)
MIN_NATS = 0.01


def sweep_edits(
    strengths: Sequence[float] = DEFAULT_STRENGTHS, edits: Sequence[str] = EDITS
) -> dict[str, Intervention]:
    """``{"edit@s": Intervention}``; strength 1 of every edit is the unedited baseline ``a``."""
    from ..interventions.spec import edits as parse

    specs = {"a": "baseline"} | {
        f"{e}@{s:g}": f"{e}:{float(s)!r}" for e in edits for s in strengths if s != 1.0
    }
    return parse(specs)


@dataclass
class MitigateResult:
    tradeoff: pd.DataFrame  # model, edit, strength, domain, bos_attention, delta_ce (+ se, pct)
    not_applicable: dict  # {model: {edit: reason}}
    strengths: tuple[float, ...] = DEFAULT_STRENGTHS
    edits: tuple[str, ...] = EDITS
    facts: dict = field(default_factory=dict)  # {model: CircuitFacts.record()}
    inputs: str | None = None  # the --inputs spec

    tables = {
        "tradeoff.csv": "every edit × strength × dataset",
        "mitigate.md": "the trade-off table",
    }
    summary_file = "mitigate.json"

    @classmethod
    def concat(cls, results: list["MitigateResult"]) -> "MitigateResult":
        """One result over several models (``sinkscope mitigate --models``)."""
        import pandas as pd

        r0 = results[0]
        return cls(
            pd.concat([r.tradeoff for r in results], ignore_index=True),
            {k: v for r in results for k, v in r.not_applicable.items()},
            r0.strengths,
            r0.edits,
            {k: v for r in results for k, v in r.facts.items()},
            r0.inputs,
        )

    def summary(self) -> dict:
        best = self.best().to_dict(orient="records")
        rows = self.tradeoff[self.tradeoff.domain == "all"][
            ["model", "edit", "strength", "bos_attention", "pct_baseline", "delta_ce"]
        ]
        return {
            "models": list(dict.fromkeys(self.tradeoff.model)),
            "inputs": self.inputs,
            "strengths": list(self.strengths),
            "edits": list(self.edits),
            "facts": self.facts,
            "best": best,
            "not_applicable": self.not_applicable,
            "rows": rows.to_dict(orient="records"),
        }

    def write(
        self, out: str | os.PathLike[str], *, figures: bool = True, extra: dict | None = None
    ) -> dict[str, str]:
        """``tradeoff.csv``, ``mitigate.md``, ``mitigate.json`` (plus ``extra``) and, with
        ``figures``, one trade-off PNG per model; ``sinkscope mitigate`` and reproduce's mitigate
        stage write through here."""
        import re
        from pathlib import Path

        from ..io import write_json_atomic
        from ..report.compare import tradeoff_figure
        from ..report.formats import figure_name

        out = Path(out)
        self.tradeoff.to_csv(out / "tradeoff.csv", index=False, float_format="%.6g")
        (out / "mitigate.md").write_text(self.markdown())
        write_json_atomic(out / "mitigate.json", self.summary() | (extra or {}))
        figs = {}
        if figures:
            models = list(dict.fromkeys(self.tradeoff.model))
            for m in models:
                name = figure_name(
                    "tradeoff"
                    if len(models) == 1
                    else f"tradeoff_{re.sub(r'[^A-Za-z0-9._-]+', '_', m)}"
                )
                tradeoff_figure(self.tradeoff, m, out / name)
                figs[name] = (
                    f"{m}: sink left against cross-entropy added as each component is scaled from 1 (kept) to 0 (removed), per dataset."
                )
        return figs

    def format(self) -> str:
        return self.markdown()

    def frames(self) -> dict:
        """The result's tables, by CSV name: ``tradeoff``."""
        return {"tradeoff": self.tradeoff}

    def best(self) -> pd.DataFrame:
        """Per model: the edit with the most sink removed per nat (domain ``all``)."""
        import numpy as np
        import pandas as pd

        rows = []
        t = self.tradeoff[(self.tradeoff.domain == "all") & (self.tradeoff.strength < 1)]
        for model, g in t.groupby("model", sort=False):
            base = self.tradeoff[
                (self.tradeoff.model == model)
                & (self.tradeoff.domain == "all")
                & (self.tradeoff.strength == 1)
            ].bos_attention.iloc[0]
            g = g.assign(removed=base - g.bos_attention)
            g = g.assign(per_nat=g.removed / g.delta_ce.clip(lower=MIN_NATS))
            g = g[g.removed > 0]
            if not len(g):
                rows.append(
                    {
                        "model": model,
                        "best_edit": "none",
                        "strength": np.nan,
                        "removed": 0.0,
                        "delta_ce": np.nan,
                        "sink_removed_per_nat": 0.0,
                    }
                )
                continue
            r = g.loc[g.per_nat.idxmax()]
            rows.append(
                {
                    "model": model,
                    "best_edit": r.edit,
                    "strength": r.strength,
                    "removed": r.removed,
                    "delta_ce": r.delta_ce,
                    "sink_removed_per_nat": r.per_nat,
                }
            )
        return pd.DataFrame(rows)

    def markdown(self) -> str:
        from ..report.tables import fmt

        out = [
            "| model | edit | "
            + " | ".join(f"s={s:g}" for s in sorted(set(self.tradeoff.strength), reverse=True))
            + " |"
        ]
        ss = sorted(set(self.tradeoff.strength), reverse=True)
        out.append("|---|---|" + "---|" * len(ss))
        t = self.tradeoff[self.tradeoff.domain == "all"]
        for (model, edit), g in t.groupby(["model", "edit"], sort=False):
            cells = []
            for s in ss:
                r = g[g.strength == s]
                cells.append(
                    f"{r.bos_attention.iloc[0]:.3f} / {fmt(r.delta_ce.iloc[0], '+.3f')}"
                    if len(r)
                    else ""
                )
            out.append(f"| {model} | {edit} | " + " | ".join(cells) + " |")
        out += ["", "Cells: BOS attention (layer band) / Δ cross-entropy (nats), all inputs.", ""]
        out += [
            "| model | most sink removed per nat | at strength | sink removed | Δ CE | per nat |",
            "|---|---|---|---|---|---|",
        ]
        for _, r in self.best().iterrows():
            out.append(
                f"| {r.model} | {r.best_edit} | {r.strength:g} | {r.removed:.3f} | {r.delta_ce:+.3f} | {r.sink_removed_per_nat:.2f} |"
            )
        for model, na in self.not_applicable.items():
            for e, why in na.items():
                out.append(f"\n{model}: `{e}` not applicable ({why})")
        return "\n".join(out) + "\n"


def _edits(text: str) -> tuple[str, ...]:
    return name_list(text, "--edits", EDITS)


@register_stage
@dataclass
class MitigateConfig(Stage):
    """``sinkscope mitigate`` as a stage: each edit in ``edits`` scaled through ``strengths``."""

    strengths: tuple[float, ...] = option(
        DEFAULT_STRENGTHS,
        "--strengths",
        "comma-separated mitigation strengths: the fraction of each edited part kept, from 1 "
        "(no edit) to 0 (1 is always added)",
        parse=parse_strengths,
        reproduce=(1.0, 0.5, 0.0),
    )
    edits: tuple[str, ...] = option(
        EDITS,
        "--edits",
        "comma-separated mitigation edits, s the strength: "
        + "; ".join(f"{k} = {SCALABLE_TEXT[k]}" for k in EDITS),
        parse=_edits,
        reproduce=True,
    )

    name = "mitigate"
    help = "sweep each mitigation's strength 1 -> 0: sink left vs cross-entropy added"
    example = "sinkscope mitigate --edits bq,wk --strengths 1,0.5,0 --per-domain 10"
    title = "Mitigation trade-off: sink removed per nat"
    record = MitigateRecord
    multi_model = True
    steps = (Step("mitigate", order=70),)
    reading = staticmethod(sections.mitigate_reading)
    section = staticmethod(sections.mitigate_section)

    def __post_init__(self):
        # 1 (the unedited model) is always a strength, as --strengths adds it; descending
        s = tuple(float(x) for x in self.strengths)
        self.strengths = tuple(sorted(set(s) | {1.0}, reverse=True)) if s else s

    @property
    def facts(self) -> tuple[str, ...]:
        return ("coords",) + (("q_bar",) if "qbar" in self.edits else ())

    def check(self) -> None:
        from ..errors import SinkscopeError

        if any(not 0 <= x <= 1 for x in self.strengths) or 1.0 not in self.strengths:
            raise SinkscopeError(
                f"strengths {self.strengths}: each must lie in [0, 1] and 1 "
                "(unedited) must be among them"
            )
        if not self.edits or any(e not in EDITS for e in self.edits):
            raise SinkscopeError(f"edits {self.edits}: choose from {', '.join(EDITS)}")

    def settle(self, opts: RunOptions) -> None:
        """The W_K edit's coordinates: --coords-rule, else sigma when --sigma is given, else
        the paper's top-3 |EPE_0| (as intervene's paper preset)."""
        from ..interventions.presets import choose_rule

        opts.coords_rule = choose_rule(opts.coords_rule, opts.k_sigma, "paper")

    def compute(
        self,
        model: SinkModel,
        inputs: TokenizedInputs | None,
        facts: CircuitFacts | None = None,
        *,
        band: tuple[int, int] | None = None,
        batch_size: int = 32,
        progress: bool = True,
    ) -> MitigateResult:
        """The trade-off rows of one model, with the run's facts (coordinates for ``wk``, q̄ for
        ``qbar``, the creating block for ``patch0``); None decides them here."""
        from ..analysis.facts import resolve_facts

        if facts is None:
            facts = resolve_facts(
                model,
                inputs,
                band=band,
                q_bar="qbar" in self.edits,
                batch_size=batch_size,
                progress=progress,
            )
        df, na = tradeoff_rows(
            model,
            inputs,
            strengths=self.strengths,
            edits=self.edits,
            coords=facts.coords,
            band=band,
            cache=facts.cache(),
            batch_size=batch_size,
            progress=progress,
        )
        return MitigateResult(
            df,
            {model.name: na},
            tuple(self.strengths),
            tuple(self.edits),
            {model.name: facts.record()},
            inputs.spec,
        )


def tradeoff_rows(
    model: SinkModel,
    inputs: TokenizedInputs,
    *,
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    edits: Sequence[str] = EDITS,
    coords: list[int] | None = None,
    band: tuple[int, int] | None = None,
    cache: dict | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Sweep ``edits`` over ``strengths`` given the circuit facts they need (``coords`` for ``wk``;
    ``cache``: ``q_bar`` for ``qbar``, ``creating_block`` for ``patch0``)."""
    import pandas as pd

    from ..interventions.run import run_interventions
    from ..metrics import resolve_band

    ivs = sweep_edits(strengths, edits)
    res = run_interventions(
        model,
        inputs,
        ivs,
        coords=coords,
        band=resolve_band(band, model.adapter.n_layers),
        batch_size=batch_size,
        progress=progress,
        cache=cache,
    )
    t = res.table()
    t = t[t.scope == "mid"]
    rows, na = [], {}
    for _, r in t.iterrows():
        if r.intervention == "a":
            for e in edits:
                rows.append({"edit": e, "strength": 1.0, **_vals(r)})
            continue
        e, s = r.intervention.split("@")
        if not r.applicable:
            na[e] = r.reason
            continue
        rows.append({"edit": e, "strength": float(s), **_vals(r)})
    df = pd.DataFrame(rows)
    df = df[~df.edit.isin(na)]
    df.insert(0, "model", model.name)
    return df.sort_values(
        ["edit", "domain", "strength"], ascending=[True, True, False], kind="stable"
    ).reset_index(drop=True), na


def _vals(r) -> dict:
    return {
        "domain": r.dataset,
        "bos_attention": r["mean"],
        "bos_attention_se": r.se,
        "pct_baseline": r.pct_baseline,
        "delta_ce": r.delta_ce,
        "delta_ce_se": r.delta_ce_se,
    }
