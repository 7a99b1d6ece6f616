"""``sinkscope compare``: the sink circuit across architectures, measured rather than cited.

Per model: which components it has (b_Q, positions, MLP, QK-norm), sink strength per domain,
where index 0 becomes special (creating block, massive coordinates), how much of index 0's logit
advantage the shared query component explains (and GPT-2's literal b_Q term), how strongly the
key weights read the massive coordinates (γ with q̄), and the matching interventions' sink and
loss effects:

* ``bq0``   b_Q := 0 (models with a query bias);
* ``qbar0`` remove the effective query bias q̄ from every query (any architecture);
* ``patch0`` replace index 0's residual after the creating block by the others' mean;
* ``wk0``   zero the W_K rows of index 0's massive coordinates;
* ``rand``  control: zero as many random non-massive W_K rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import SinkscopeError
from ..interventions.labels import COMPARE_EDITS
from ..registry import Stage, register_stage

if TYPE_CHECKING:
    import os
    from typing import Iterable

    import pandas as pd

    from ..analysis.facts import CircuitFacts
    from ..data import TokenizedInputs
    from ..models import SinkModel


@dataclass
class Circuit:
    """The structural facts of one model on one set of inputs."""

    model: str
    info: dict
    band: tuple[int, int]
    measure: object  # MeasureResult
    profile: object  # ResidualProfile
    shared: object  # SharedQuery
    creating_block: int | None
    coords: list[int]
    coord_values: list[float]
    gamma_split: dict | None
    seconds: dict = field(default_factory=dict)
    facts: object = None  # the run's CircuitFacts (coords, rule, creating block, q̄)


def circuit(
    model: SinkModel,
    inputs: TokenizedInputs,
    *,
    band: tuple[int, int] | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> Circuit:
    """Measure, residual profile, shared query and γ(q̄) for one model (three passes)."""
    from ..analysis import gamma_split, residual_profile
    from ..analysis.facts import resolve_facts
    from ..analysis.shared_query import shared_gamma, shared_query
    from ..metrics import resolve_band
    from .measure import measure

    ad = model.adapter
    band = resolve_band(band, ad.n_layers)
    secs = {}
    t = time.perf_counter()
    m = measure(model, inputs, keys=(0, 1), batch_size=batch_size, band=band, progress=progress)
    secs["measure"] = time.perf_counter() - t
    t = time.perf_counter()
    prof = residual_profile(model, inputs, batch_size=batch_size, progress=progress)
    secs["residual"] = time.perf_counter() - t
    t = time.perf_counter()
    sq = shared_query(model, inputs, batch_size=batch_size, progress=progress)
    facts = resolve_facts(
        model, inputs, band=band, profile=prof, q_bar=sq.q_bar
    )  # the one rule (analysis.facts)
    cb = facts.creating_block
    coords = facts.coords.list or []
    at = (
        cb if cb is not None else band[0] - 1
    ) + 1  # index 0's values where the sink layers read them
    values = [float(prof.signed0[at, c]) for c in coords]
    gs = None
    gc = (
        facts.gamma_coords or facts.coords
    ).list  # γ's coordinates, as explain and reproduce split it
    if gc:
        gs, _ = gamma_split(
            shared_gamma(model, sq.q_bar, int(inputs.ids.shape[1])).float(), gc, band
        )
    secs["shared_query"] = time.perf_counter() - t
    return Circuit(
        model.name, ad.describe(), band, m, prof, sq, cb, coords, values, gs, secs, facts
    )


def compare_edits(c: Circuit, seed: int = 0) -> dict:
    """The edits ``compare`` matches across models, in the ``--edit`` language."""
    from ..interventions.spec import edits

    return edits(
        {
            "a": "baseline",
            "bq0": "bq:0",
            "qbar0": "qbar:0",
            "patch0": "patch0:0",
            "wk0": "wk:0",
            "rand": f"random_wk:{max(1, len(c.coords))}:{seed}",
        }
    )


def circuit_cache(c: Circuit) -> dict:
    return c.facts.cache()


@dataclass
class CompareResult:
    rows: pd.DataFrame
    per_head: pd.DataFrame
    seconds: dict
    inputs: str | None = None  # the --inputs spec

    tables = {
        "compare.csv": "one row per model × domain",
        "compare.md": "the comparison as Markdown",
        "shared_query_per_head.csv": "shared-query shares per model × domain × layer × head",
    }
    summary_file = "compare.json"

    @classmethod
    def concat(cls, results: list["CompareResult"]) -> "CompareResult":
        import pandas as pd

        return cls(
            pd.concat([r.rows for r in results], ignore_index=True),
            pd.concat([r.per_head for r in results], ignore_index=True),
            {k: v for r in results for k, v in r.seconds.items()},
            results[0].inputs,
        )

    def summary(self) -> dict:
        return {
            "models": list(dict.fromkeys(self.rows.model)),
            "inputs": self.inputs,
            "seconds": self.seconds,
        }

    def write(
        self, out: str | os.PathLike[str], *, figures: bool = True, extra: dict | None = None
    ) -> dict[str, str]:
        """``compare.csv``, ``compare.md``, ``shared_query_per_head.csv``, ``compare.json`` (plus
        ``extra``) and, with ``figures``, ``compare.png``."""
        from pathlib import Path

        from ..io import write_json_atomic
        from ..report.compare import compare_figure

        out = Path(out)
        self.rows.to_csv(out / "compare.csv", index=False, float_format="%.6g")
        self.per_head.to_csv(out / "shared_query_per_head.csv", index=False, float_format="%.6g")
        (out / "compare.md").write_text(self.markdown())
        write_json_atomic(out / "compare.json", self.summary() | (extra or {}))
        if not figures:
            return {}
        from ..report.formats import figure_name

        name = figure_name("compare")
        compare_figure(self, out / name)
        return {name: "The sink circuit across models."}

    def format(self) -> str:
        return self.markdown()

    def frames(self) -> dict:
        """The result's tables, by CSV name: ``compare``, ``shared_query_per_head``."""
        return {"compare": self.rows, "shared_query_per_head": self.per_head}

    def markdown(self) -> str:
        import pandas as pd

        from ..report.tables import fmt

        t = self.rows
        out = [
            "| model | b_Q | positions | MLP | QK-norm | domain | BOS attention | creating block | massive coords (index 0) | shared-query share | literal b_Q share | γ(q̄) massive/other |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for _, r in t.iterrows():
            bq = "n/a" if pd.isna(r.bq_share) else f"{r.bq_share:.2f}"
            gr = "n/a" if pd.isna(r.gamma_ratio) else f"{r.gamma_ratio:.1f}×"
            out.append(
                f"| {r.model} | {'yes' if r.has_query_bias else 'no'} | {r.positional} | {'yes' if r.has_mlp else 'no'} | {'yes' if r.qk_norm else 'no'} | {r.domain} | "
                f"{r.bos_attention:.3f} | {r.creating_block} | {r.massive_coords} | {r.shared_query_share:.2f} | {bq} | {gr} |"
            )
        out += [
            "",
            "Matching interventions (all inputs): BOS attention as % of baseline, Δ cross-entropy in nats",
            "",
        ]
        edits = [e for e in COMPARE_EDITS if f"{e}_pct" in t.columns]
        out += [
            "| model | " + " | ".join(f"{e}: {COMPARE_EDITS[e]}" for e in edits) + " |",
            "|---|" + "---|" * len(edits),
        ]
        for _, r in t[t.domain == "all"].iterrows():
            cells = []
            for e in edits:
                if pd.isna(r[f"{e}_pct"]):
                    cells.append(f"n/a ({r[f'{e}_reason']})" if r.get(f"{e}_reason") else "n/a")
                else:
                    cells.append(f"{r[f'{e}_pct']:.1f}%, {fmt(r[f'{e}_delta_ce'], '+.3f')}")
            out.append(f"| {r.model} | " + " | ".join(cells) + " |")
        return "\n".join(out) + "\n"


def compare_one(
    model: SinkModel,
    inputs: TokenizedInputs,
    *,
    band: tuple[int, int] | None = None,
    batch_size: int = 32,
    progress: bool = True,
    seed: int = 0,
) -> tuple[list[dict], pd.DataFrame, Circuit]:
    """Rows (one per domain, ``all`` first) and the per-head table of one model."""
    import numpy as np
    import torch

    from ..interventions.run import run_interventions

    c = circuit(model, inputs, band=band, batch_size=batch_size, progress=progress)
    t = time.perf_counter()
    iv = run_interventions(
        model,
        inputs,
        compare_edits(c, seed),
        coords=c.facts.coords,
        seed=seed,
        band=c.band,
        batch_size=batch_size,
        progress=progress,
        cache=circuit_cache(c),
    )
    c.seconds["interventions"] = time.perf_counter() - t
    table = iv.table()
    table = table[table.scope == "mid"]
    summary = c.measure.summary()
    masks = inputs.domain_masks()
    rows = []
    info = c.info
    for dom, sel in masks.items():
        idx = torch.as_tensor(np.nonzero(sel)[0])
        pooled = c.shared.pooled(c.band, idx)
        row = {
            "model": model.name,
            "has_query_bias": bool(info["has_query_bias"]),
            "positional": info["positional"],
            "has_mlp": bool(info["has_mlp"]),
            "qk_norm": bool(info["qk_norm"]),
            "domain": dom,
            "n": int(sel.sum()),
            "bos_attention": summary["bos_attention"][dom]["mean"],
            "bos_attention_se": summary["bos_attention"][dom]["se"],
            "creating_block": "none" if c.creating_block is None else c.creating_block,
            "massive_coords": " ".join(map(str, c.coords)) or "none",
            "massive_values": " ".join(f"{v:.1f}" for v in c.coord_values),
            "coords_rule": c.facts.coords.rule,
            "shared_query_share": pooled["shared_query_share"],
            "bq_share": pooled["bq_share"],
            "index0_advantage": pooled["mean_advantage"],
            "gamma_ratio": c.gamma_split["ratio_of_means"] if c.gamma_split else float("nan"),
            "layer_band": f"{c.band[0]}:{c.band[1]}",
        }
        for e in COMPARE_EDITS:
            r = table[(table.intervention == e) & (table.dataset == dom)].iloc[0]
            row[f"{e}_bos"] = r["mean"] if r.applicable else float("nan")
            row[f"{e}_pct"] = r.pct_baseline if r.applicable else float("nan")
            row[f"{e}_delta_ce"] = r.delta_ce if r.applicable else float("nan")
            row[f"{e}_reason"] = r.reason
        rows.append(row)
    per_head = c.shared.frame({d: s for d, s in masks.items()})
    per_head.insert(0, "model", model.name)
    return rows, per_head, c


@register_stage
@dataclass
class CompareConfig(Stage):
    """``sinkscope compare`` as a stage, run once per model (facts decided inside, from the
    residual profile and q̄ it computes anyway)."""

    seed: int = 0  # the run's --seed: the control's random rows

    name = "compare"
    help = (
        "the sink circuit across models: components, sink per domain, creating block, "
        "shared-query share, matching interventions"
    )
    multi_model = "required"  # --models (no default: a comparison names its models)
    example = (
        "sinkscope compare --models default --per-domain 10\n"
        "sinkscope compare --models default,sinkscope-out/train --per-domain 10"
        "  # after train's example"
    )
    steps = ()  # several models: not a reproduce step (reproduce studies one)

    def compute(
        self,
        model: SinkModel,
        inputs: TokenizedInputs | None,
        facts: CircuitFacts | None = None,
        *,
        band: tuple[int, int] | None = None,
        batch_size: int = 32,
        progress: bool = True,
    ) -> CompareResult:
        import pandas as pd

        t = time.perf_counter()
        rows, head, c = compare_one(
            model, inputs, band=band, batch_size=batch_size, progress=progress, seed=self.seed
        )
        secs = {
            model.name: {
                **{k: round(v, 1) for k, v in c.seconds.items()},
                "total": round(time.perf_counter() - t, 1),
            }
        }
        return CompareResult(pd.DataFrame(rows), head, secs, inputs.spec)


def compare(
    models_and_inputs: Iterable[tuple[SinkModel, TokenizedInputs]],
    *,
    band: tuple[int, int] | None = None,
    batch_size: int = 32,
    progress: bool = True,
    seed: int = 0,
) -> CompareResult:
    """Run :func:`compare_one` on every ``(model, inputs)`` pair, in order. Pass a generator
    (``inputs`` tokenised with that model's tokenizer) to hold one model in memory at a time;
    ``seconds`` times each model's analyses (loading excluded)."""
    cfg = CompareConfig(seed)
    results = [
        cfg.compute(m, i, band=band, batch_size=batch_size, progress=progress)
        for m, i in models_and_inputs
    ]
    if not results:
        raise SinkscopeError("no models to compare; pass e.g. --models default,packaged:smollm2")
    return CompareResult.concat(results)
