"""The results of an interventions run: per-example arrays of each intervention
(:class:`InterventionRun`) and the tables derived from them (:class:`InterventionTable`:
Table 1 per dataset and layer scope, per-example rows, the Markdown view)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .labels import PAPER_TABLE1

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


@dataclass
class InterventionRun:
    """Per-example results of one intervention (arrays are None when not applicable)."""

    id: str
    description: str
    label: str = ""
    reason: str | None = None
    per_head: np.ndarray | None = (
        None  # [example, layer, head, key] second-half attention to keys (0, 1)
    )
    ce: np.ndarray | None = None  # [example] mean next-token cross-entropy (nats)
    extra: dict = field(default_factory=dict)

    @property
    def applicable(self) -> bool:
        return self.reason is None


@dataclass
class InterventionTable:
    """Every intervention's per-example results and the tables derived from them (the stage's
    :class:`~sinkscope.stages.intervene.InterveneResult` adds writing and figures)."""

    model: str
    inputs: object
    band: tuple[int, int]
    runs: list[InterventionRun]
    baseline_id: str
    seconds: float = 0.0
    coords: list[int] | None = None  # the massive coordinates every intervention (and Fig 5) used
    coords_rule: str = ""  # the rule that chose them (analysis.facts)
    seed: int = 0
    cache: dict = field(default_factory=dict)  # what seeded each Context (q_bar, creating block)
    model_info: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)  # CircuitFacts.record() of the run
    fig5_maps: dict = field(default_factory=dict)  # Fig 5: intervention -> [T, T] map or None
    fig5_tokens: list = field(default_factory=list)  # Fig 5's tokens, as text

    def summary(self) -> dict:
        """``summary.json`` of ``sinkscope intervene`` and the record of reproduce's stage: the
        inputs, settings, each intervention's status, and Table 1 as nested
        ``{scope: {dataset: {intervention: cell}}}``."""
        from ..metrics.sink import SE_ESTIMATOR

        table1: dict = {}
        for _, r in self.table().iterrows():
            cell = {
                "description": r.description,
                "applicable": bool(r.applicable),
                "reason": r.reason,
            }
            if r.applicable:
                cell |= {
                    k: float(r[k])
                    for k in (
                        "mean",
                        "se",
                        "pct_baseline",
                        "attn_to_1",
                        "ce",
                        "delta_ce",
                        "delta_ce_se",
                    )
                }
                cell["pct"] = cell.pop("pct_baseline")
            table1.setdefault(r.scope, {}).setdefault(r.dataset, {})[r.intervention] = cell
        return {
            "model": self.model,
            "model_info": self.model_info,
            "inputs": self.inputs.record(),
            "n_examples": len(self.inputs),
            "layer_band": list(self.band),
            "seed": self.seed,
            "coords": self.coords,
            "coords_rule": self.coords_rule,
            "interventions": {
                r.id: {"description": r.description, "applicable": r.applicable, "reason": r.reason}
                | (
                    {
                        "random_key_coords": {
                            str(k): v for k, v in r.extra["random_key_coords"].items()
                        },
                        "random_key_draw": r.extra.get("random_key_draw"),
                    }
                    if "random_key_coords" in r.extra
                    else {}
                )
                for r in self.runs
            },
            "estimators": {
                "se": SE_ESTIMATOR,
                "delta_ce_se": SE_ESTIMATOR + ", of the paired differences",
            },
            "facts": self.facts,
            "table1": table1,
            "seconds": round(self.seconds, 2),
        }

    def run(self, rid: str) -> InterventionRun:
        return next(r for r in self.runs if r.id == rid)

    def per_example(self, rid: str, scope: str = "mid", key: int = 0) -> np.ndarray:
        """``[example]`` head-mean, layer-band-mean attention to ``key`` (0 or 1)."""
        r = self.run(rid)
        L = r.per_head.shape[1]
        lo, hi = self.band if scope == "mid" else (0, L)
        return r.per_head[:, lo:hi, :, key].mean(axis=(1, 2))

    def per_example_frame(self) -> pd.DataFrame:
        """One row per applicable intervention × example: band / all-layer BOS, attention to 1, CE."""
        import numpy as np
        import pandas as pd

        frames = [
            pd.DataFrame(
                {
                    "intervention": r.id,
                    "example": np.arange(len(r.ce)),
                    "domain": self.inputs.domains,
                    "bos_attention": self.per_example(r.id, "mid"),
                    "bos_attention_all_layers": self.per_example(r.id, "all"),
                    "attn_to_1": self.per_example(r.id, "mid", key=1),
                    "ce": r.ce,
                }
            )
            for r in self.runs
            if r.applicable
        ]
        return pd.concat(frames, ignore_index=True)

    def table(self) -> pd.DataFrame:
        """One row per intervention × dataset (``all`` + each domain) × scope (``mid``, ``all``)."""
        import numpy as np
        import pandas as pd

        from ..metrics import aggregate

        groups = self.inputs.domain_masks()
        base = self.run(self.baseline_id)
        rows = []
        for scope in ("mid", "all"):
            for r in self.runs:
                for ds, sel in groups.items():
                    row = {
                        "intervention": r.id,
                        "description": r.description,
                        "dataset": ds,
                        "scope": scope,
                        "applicable": r.applicable,
                        "reason": r.reason or "",
                    }
                    if r.applicable:
                        agg = aggregate(
                            self.per_example(r.id, scope)[sel],
                            baseline=float(self.per_example(base.id, scope)[sel].mean()),
                        )
                        dce = aggregate(r.ce[sel] - base.ce[sel])
                        row |= {
                            "mean": agg["mean"],
                            "se": agg["se"],
                            "ci_low": agg["ci_low"],
                            "ci_high": agg["ci_high"],
                            "pct_baseline": agg["pct_baseline"],
                            "n": agg["n"],
                            "attn_to_1": float(self.per_example(r.id, scope, key=1)[sel].mean()),
                            "ce": float(r.ce[sel].mean()),
                            "delta_ce": dce["mean"],
                            "delta_ce_se": dce["se"],
                        }
                    paper = PAPER_TABLE1.get(r.id) if r.label else None
                    row["paper_mean"], row["paper_pct"] = (
                        paper if paper and ds == "all" and scope == "mid" else (np.nan, np.nan)
                    )
                    rows.append(row)
        return pd.DataFrame(rows)

    def markdown(self) -> str:
        """The Table 1 view: overall (mid), per dataset, and the all-layer variant."""
        import numpy as np

        t = self.table()
        out = []

        def fmt(x, spec):
            return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)

        for title, rows in (
            (
                f"BOS attention, layers {self.band[0]}..{self.band[1] - 1} (0-based), all inputs",
                t[(t.scope == "mid") & (t.dataset == "all")],
            ),
            ("BOS attention, all layers, all inputs", t[(t.scope == "all") & (t.dataset == "all")]),
        ):
            out += [
                f"### {title}",
                "",
                "| id | intervention | mean ± 2SE | % of baseline | attn to index 1 | Δ CE (nats) ± 2SE | paper, GPT-2 small: mean (%) |",
                "|---|---|---|---|---|---|---|",
            ]
            for _, r in rows.iterrows():
                if not r.applicable:
                    out.append(
                        f"| {r.intervention} | {r.description} | not applicable: {r.reason} | | | | |"
                    )
                    continue
                paper = (
                    f"{r.paper_mean:.3f} ({r.paper_pct:.1f})" if not np.isnan(r.paper_mean) else ""
                )
                out.append(
                    f"| {r.intervention} | {r.description} | {r['mean']:.3f} ± {2 * r.se:.3f} | {fmt(r.pct_baseline, '.1f')} | {r.attn_to_1:.3f} | {r.delta_ce:+.3f} ± {fmt(2 * r.delta_ce_se, '.3f')} | {paper} |"
                )
            out.append("")
        per = t[(t.scope == "mid") & (t.dataset != "all") & t.applicable]
        if len(per):
            ds = list(dict.fromkeys(per.dataset))
            out += [
                "### Per dataset (layers band): mean (% of baseline), Δ CE",
                "",
                "| id | " + " | ".join(ds) + " |",
                "|---|" + "---|" * len(ds),
            ]
            for rid, g in per.groupby("intervention", sort=False):
                cells = [
                    f"{g[g.dataset == d]['mean'].iloc[0]:.3f} ({fmt(g[g.dataset == d].pct_baseline.iloc[0], '.1f')}%), {g[g.dataset == d].delta_ce.iloc[0]:+.2f}"
                    for d in ds
                ]
                out.append(f"| {rid} | " + " | ".join(cells) + " |")
        return "\n".join(out) + "\n"
