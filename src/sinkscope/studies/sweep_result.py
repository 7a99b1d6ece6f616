"""The sweep's tidy table (``sweep.csv``) and what is derived from it: the cross-model Table 1
(mean and spread over seeds), its Markdown and the files and figures the driver writes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from .sweep import SweepConfig

SWEEP_COLUMNS = [
    "model",
    "step",
    "length",
    "content",
    "seed",
    "domain",
    "intervention",
    "description",
    "applicable",
    "reason",
    "bos_attention",
    "se",
    "n",
    "pct_baseline",
    "attn_to_1",
    "delta_ce",
]
TABLE1_COLUMNS = [
    "model",
    "intervention",
    "description",
    "domain",
    "mean",
    "sd_seeds",
    "n_seeds",
    "n",
    "pct_baseline",
]


@dataclass
class SweepResult:
    """The sweep's tidy table (``sweep.csv``) and what is derived from it."""

    frame: pd.DataFrame
    config: SweepConfig
    failed: dict = field(default_factory=dict)  # cell description -> error
    seconds: float = 0.0
    loaded: dict = field(
        default_factory=dict
    )  # model spec -> SinkModel.record() (cells cached before it: absent)
    cached: int = 0  # cells of the grid reused from DIR/cells/ (computed by an earlier run)
    computed: int = 0  # cells computed (and cached) by this run; failed ones are in ``failed``

    def cells_text(self) -> str:
        """How this run got its cells: ``"9 cells: 9 cached, 0 computed"`` (and ``, N failed``)."""
        n = len(self.config.grid())
        text = f"{n} cell{'' if n == 1 else 's'}: {self.cached} cached, {self.computed} computed"
        return text + (f", {len(self.failed)} failed" if self.failed else "")

    def intervention_order(self, intervention: str) -> int:
        """Interventions in the grid's own order (a..j), whichever model lacks one."""
        return list(dict.fromkeys(self.frame.intervention)).index(intervention)

    def frames(self) -> dict:
        """The result's tables, by CSV name: ``sweep`` (every cell row), ``table1_models``."""
        return {"sweep": self.frame, "table1_models": self.table1()}

    def table1_setting(self) -> tuple[int, str]:
        """Table 1's cell setting: the first length and natural text (else the first regime)."""
        c = self.config.contents
        return self.config.lengths[0], "natural" if "natural" in c else c[0]

    def table1(self) -> pd.DataFrame:
        """The cross-model Table 1: per model × intervention × domain, the mean over seeds of the
        band BOS attention, its cross-seed SD (ddof 1; NaN with one seed) and % of the baseline."""
        import numpy as np
        import pandas as pd

        length, content = self.table1_setting()
        f = self.frame[
            (self.frame.length == length) & (self.frame.content == content) & self.frame.applicable
        ]
        if f.empty:
            return pd.DataFrame(columns=TABLE1_COLUMNS)
        g = f.groupby(["model", "intervention", "domain"], sort=False)
        t = g.agg(
            description=("description", "first"),
            mean=("bos_attention", "mean"),
            sd_seeds=(
                "bos_attention",
                lambda x: float(np.std(x, ddof=1)) if len(x) > 1 else float("nan"),
            ),
            n_seeds=("seed", "nunique"),
            n=("n", "first"),
        ).reset_index()
        base = t[t.intervention == "a"].set_index(["model", "domain"])["mean"]
        t["pct_baseline"] = [
            100 * m / base.get((mo, d), np.nan) for mo, d, m in zip(t.model, t.domain, t["mean"])
        ]
        return t[TABLE1_COLUMNS]

    def markdown(self, cell_counts: bool = True) -> str:
        """Table 1 across models as Markdown (what ``sinkscope sweep`` prints); ``cell_counts``: end
        with :meth:`cells_text` (left out of ``table1_models.md``, which a rerun leaves alike)."""
        import numpy as np

        t = self.table1()
        length, content = self.table1_setting()
        out = [
            f"Table 1 across models ({content} text, {length} tokens, seeds {', '.join(map(str, self.config.seeds))}): "
            "band BOS attention, mean ± cross-seed SD (% of baseline)",
            "",
        ]
        for dom in dict.fromkeys(t.domain):
            sub = t[t.domain == dom]
            ivs = sorted(dict.fromkeys(sub.intervention), key=self.intervention_order)
            out += [
                f"### {dom}",
                "",
                "| model | " + " | ".join(ivs) + " |",
                "|---|" + "---|" * len(ivs),
            ]
            for m in dict.fromkeys(sub.model):
                cells = []
                for iv in ivs:
                    r = sub[(sub.model == m) & (sub.intervention == iv)]
                    if r.empty:
                        cells.append("n/a")
                        continue
                    r = r.iloc[0]
                    sd = "" if np.isnan(r.sd_seeds) else f" ± {r.sd_seeds:.3f}"
                    cells.append(f"{r['mean']:.3f}{sd} ({r.pct_baseline:.0f}%)")
                out.append(f"| {m} | " + " | ".join(cells) + " |")
            out.append("")
        na = self.frame[~self.frame.applicable].drop_duplicates(["model", "intervention"])
        if len(na):
            out += (
                ["Not applicable:", ""]
                + [f"- {r.model} {r.intervention}: {r.reason}" for _, r in na.iterrows()]
                + [""]
            )
        if self.failed:
            out += ["Failed cells:", ""] + [f"- {k}: {v}" for k, v in self.failed.items()] + [""]
        if cell_counts:
            out += [f"{self.cells_text()} (cached cells are reused, never recomputed).", ""]
        return "\n".join(out)

    def write(self, out: Path, *, figures: bool = True) -> dict[str, str]:
        """``sweep.csv``, ``table1_models.csv`` / ``.md``, ``sweep.json``, figures and ``report.html``."""
        from ..io import write_json_atomic, write_text_atomic

        write_text_atomic(
            out / "sweep.csv", self.frame[SWEEP_COLUMNS].to_csv(index=False, float_format="%.7g")
        )
        write_text_atomic(
            out / "table1_models.csv", self.table1().to_csv(index=False, float_format="%.7g")
        )
        write_text_atomic(
            out / "table1_models.md", f"# sinkscope sweep\n\n{self.markdown(cell_counts=False)}\n"
        )
        length, content = self.table1_setting()
        from ..stages.runner import load_record

        write_json_atomic(
            out / "sweep.json",
            {
                "config": asdict(self.config),
                "cells": len(self.config.grid()),
                "cells_cached": self.cached,
                "cells_computed": self.computed,
                "failed": self.failed,
                "table1_setting": {"length": length, "content": content},
                "seconds": round(self.seconds, 1),
            }
            | load_record(self.loaded, per_model=True),
        )
        figs = {}
        if figures:
            from ..report.sweep import sweep_figures, write_sweep_report

            figs = sweep_figures(self, out)
            write_sweep_report(self, out, figs)
        return figs
