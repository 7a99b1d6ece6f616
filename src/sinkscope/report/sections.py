"""Report sections and plain-language readings of the built-in stages, written from their typed
records (:mod:`sinkscope.report.records`) only. Each stage names its own in its module
(``Stage.section`` / ``Stage.reading``, or per ``reproduce`` step); a new stage may keep both
beside its code instead.
"""

from __future__ import annotations

import math

from .readings import all_layers_text
from .records import ExplainRecord, InterventionsRecord, MitigateRecord, SharedQueryRecord
from .tables import _e, _f, _table, plural


def circuit_weights_section(w: ExplainRecord) -> str:
    import pandas as pd

    out = []
    g = w.gamma
    if g:
        lab = "γ" if w.gamma_query == "b_Q" else "γ(q̄)"
        out.append(f"<h3>{lab} on the massive coordinates vs the rest</h3>")
        out.append(
            _table(
                pd.DataFrame(
                    [
                        {
                            "coordinates": name,
                            f"mean |{lab}|": _f(v.mean, ".4f"),
                            f"median |{lab}|": _f(v.median, ".4f"),
                            "values": f"{v.count:,}",
                        }
                        for v, name in ((g.massive, str(g.coords)), (g.other, "all others"))
                    ]
                )
            )
        )
    e = w.epe
    if e and e.massive_coords:
        out.append(f"<h3>Massive coordinates of EPE_0 ({_e(e.massive_rule or 'σ rule')})</h3>")
        out.append(
            _table(
                pd.DataFrame(
                    {
                        "coordinate": e.massive_coords,
                        "value": [epe_value(v) for v in e.massive_values],
                    }
                )
            )
        )
    return "".join(out)


def epe_value(v: float) -> str:
    """An EPE_0 coordinate's value, as the table and the reading both print it."""
    return _f(v, "+.1f")


def _norm(x: float) -> str:
    """A norm in the reading: whole from 100 up, else with enough decimals that two different
    norms (2.0 vs 0.71) do not round to look alike."""
    return _f(x, ".0f" if abs(x) >= 100 else ".1f" if abs(x) >= 1 else ".2f")


def circuit_forward_section(f: ExplainRecord) -> str:
    import pandas as pd

    d = f.delta
    if not d:
        return ""
    df = pd.DataFrame(
        [
            {
                "layer": r.layer,
                "index 0 p10": _f2(r.index0_p10),
                "index 0 median": _f2(r.index0_median),
                "largest other p90": _f2(r.max_other_p90),
                "index 0 mean": _f2(r.index0_mean),
                "others' mean": _f2(r.other_mean),
                "p10 > all p90": "yes" if r.index0_p10_above_all_other_p90 else "no",
            }
            for r in d.per_layer
        ]
    )
    return "<h3>Re-centred Δ per layer (band)</h3>" + _table(df)


def _f2(x):
    return _f(x, ".2f")


def interventions_section(iv: InterventionsRecord) -> str:
    import pandas as pd

    from ..interventions.labels import PAPER_TABLE1

    t = iv.table1
    out = []
    for scope, title in (
        ("mid", f"Table 1: BOS attention, layers {iv.band_text}, all inputs"),
        ("all", f"All-layer variant: BOS attention, {all_layers_text(iv)}, all inputs"),
    ):
        rows = []
        for rid, c in t[scope]["all"].items():
            paper = PAPER_TABLE1.get(rid)
            row = {"id": rid, "intervention": c.description}
            if c.applicable:
                row |= {
                    "BOS attention ± 2SE": f"{c.mean:.3f} ± {2 * c.se:.3f}",
                    "% of baseline": _f(c.pct, ".1f"),
                    "attention to index 1": _f(c.attn_to_1),
                    "Δ CE (nats) ± 2SE": f"{_f(c.delta_ce, '+.3f')} ± {_f(2 * c.delta_ce_se, '.3f', '0')}",
                }
            else:
                row |= {
                    "BOS attention ± 2SE": f"not applicable: {c.reason}",
                    "% of baseline": "",
                    "attention to index 1": "",
                    "Δ CE (nats) ± 2SE": "",
                }
            if scope == "mid":
                row["paper (GPT-2 small)"] = f"{paper[0]:.3f} ({paper[1]:.1f}%)" if paper else ""
            rows.append(row)
        out.append(f"<h3>{_e(title)}</h3>" + _table(pd.DataFrame(rows)))
    ds = [d for d in t["mid"] if d != "all"]
    if ds:
        rows = []
        for rid in t["mid"]["all"]:
            row = {"id": rid}
            for d in ds:
                c = iv.value(rid, "mid", d)
                row[d] = (
                    f"{c.mean:.3f} ({_f(c.pct, '.1f')}%), {_f(c.delta_ce, '+.2f')}" if c else "n/a"
                )
            rows.append(row)
        out.append(
            "<h3>Per dataset: BOS attention (% of baseline), Δ CE</h3>" + _table(pd.DataFrame(rows))
        )
    return "".join(out)


def shared_query_section(sq: SharedQueryRecord) -> str:
    import pandas as pd

    rows = [
        {
            "dataset": d,
            "shared-query share": _f(p.shared_query_share, ".2f"),
            "literal b_Q share": _f(p.bq_share, ".2f"),
            "index 0 advantage (logits)": _f(p.mean_advantage, ".2f"),
        }
        for d, p in sq.pooled.items()
    ]
    note = ""
    if any(
        p.shared_query_share > 1 or (not math.isnan(p.bq_share) and p.bq_share > 1)
        for p in sq.pooled.values()
    ):
        note = (
            '<p class="status">A share above 1 means that part of the query alone favours index 0 more than the whole query does: '
            "the rest of the query works against the sink.</p>"
        )
    return _table(pd.DataFrame(rows)) + note


def mitigate_section(mi: MitigateRecord) -> str:
    import pandas as pd

    if not mi.rows:
        return ""
    df = pd.DataFrame(
        [
            {
                "edit": r.edit,
                "strength kept": f"{r.strength:g}",
                "BOS attention": _f(r.bos_attention),
                "% of baseline": _f(r.pct_baseline, ".1f"),
                "Δ CE (nats)": _f(r.delta_ce, "+.3f"),
            }
            for r in mi.rows
        ]
    )
    return _table(df)


def circuit_weights_reading(w: ExplainRecord) -> str:
    parts = []
    e = w.epe
    if e:
        if e.massive_coords:
            # the values as the table of massive coordinates prints them (epe_value)
            vals = ", ".join(
                f"{c} ({epe_value(v)})" for c, v in zip(e.massive_coords, e.massive_values)
            )
            parts.append(
                f"The first position's effective embedding (p_0 after the layer-0 MLP) has {plural(len(e.massive_coords), 'massive coordinate')} "
                f"by the {e.massive_rule or 'σ rule'}: {vals}; "
                f"its norm is {_norm(e.norm_index0)} against a median of {_norm(e.median_norm_other)} at the other positions."
            )
        else:
            parts.append(
                f"The first position's effective embedding has no massive coordinate (norm {_norm(e.norm_index0)} vs {_norm(e.median_norm_other)} elsewhere)."
            )
    a = w.alignment
    if a:
        parts.append(
            f"b_Q points towards the key of index 0's EPE in {a.index0_share_positive:.0%} of the band's heads (mean cos {a.index0_mean_cos:+.2f}) "
            f"and away from the other positions' (mean {a.other_mean_cos:+.2f}): every query gets the same bonus for index 0."
        )
    g = w.gamma
    if g and g.zero:
        parts.append(
            f"γ is zero on every coordinate (mean |γ| {g.massive.mean:.2g} on {g.coords}, {g.other.mean:.2g} elsewhere): "
            "this model's query vector does not read the residual stream through the key weights."
        )
    elif g:
        via = (
            "b_Q"
            if w.gamma_query == "b_Q"
            else "the effective query bias q̄ (this model has no b_Q)"
        )
        parts.append(
            f"Through {via}, the key projections weigh the coordinates {g.coords} {g.ratio_of_means:.1f}× more than the others "
            f"(mean |γ| {g.massive.mean:.4f} vs {g.other.mean:.4f}; coordinates from the {w.coords_source})."
        )
    return (
        " ".join(parts) or "No weight-only analysis could run on this model (see the skipped list)."
    )


def circuit_forward_reading(f: ExplainRecord) -> str:
    parts = []
    r = f.residual
    if r:
        if r.creating_block is not None:
            parts.append(
                f"Index 0 becomes special after block {r.creating_block}: its residual norm peaks at {r.max_norm_ratio:.0f}× the other positions' (after block {r.max_norm_ratio_block})."
            )
        else:
            parts.append(
                f"Index 0 never stands out in the residual stream (norm ratio at most {r.max_norm_ratio:.1f}×)."
            )
    d = f.delta
    if d:
        lay = d.layers_index0_p10_above_all_other_p90
        parts.append(
            f"The query-independent bonus Δ (re-centred) averages {d.index0_mean:.1f} at index 0 against {d.other_mean:.1f} elsewhere; "
            + (
                f"in layers {lay} even index 0's 10th percentile beats every other position's 90th."
                if lay
                else "the distributions overlap in every layer."
            )
        )
    c = f.decomposition_check
    if c:
        parts.append(
            f"The four score terms add up to the model's own scores within {c.max_abs_error:.1e} (largest score {c.max_abs_score:.0f})."
        )
    e = f.epe
    if e and e.validation_median_index0 is not None:
        parts.append(
            f"The EPE predicts what position adds after the first MLP: median cos {e.validation_median_index0:.4f} at index 0, "
            f"at least {e.validation_min_median_other:.4f} elsewhere (global median {e.validation_global_median:.4f}, all positions)."
        )
        if e.validation_full_block:
            v = e.validation_full_block
            parts.append(
                f"After the whole first block, run causally, it predicts {v.validation_median_index0:.4f} at index 0 "
                f"(global median {v.validation_global_median:.4f})."
            )
    return " ".join(parts) or "No forward-pass analysis could run (see the skipped list)."


def shared_query_reading(sq: SharedQueryRecord) -> str:
    p = sq.pooled["all"]
    text = (
        f"In layers {sq.band_text}, the part of every query that is the same at all positions (the effective query bias q̄) accounts for "
        f"{p.shared_query_share:.0%} of index 0's logit advantage over the other keys (mean advantage {p.mean_advantage:.2f} logits)."
    )
    if p.shared_query_share > 1:
        text += (
            " A share above 100% means the shared part alone favours index 0 more than the whole query does: "
            "the position-specific part of the queries works against the sink."
        )
    if sq.has_query_bias and not math.isnan(p.bq_share):
        text += f" The literal b_Q term alone accounts for {p.bq_share:.0%}."
        if p.bq_share > 1:
            text += " (Above 100%: b_Q alone favours index 0 more than the whole query.)"
    else:
        text += " The model has no query bias, so the shared part is built from the inputs."
    return text


def mitigate_reading(mi: MitigateRecord) -> str:
    b = mi.best[0] if mi.best else None  # one model in a reproduce run
    text = ""
    if b and b.best_edit != "none":
        text = (
            f"Per nat of cross-entropy added, scaling `{b.best_edit}` to s = {b.strength:g} removes the most sink: "
            f"{_f(b.removed)} of BOS attention for {_f(b.delta_ce, '+.3f')} nats."
        )
    elif b:
        text = "No edit removed any sink at the strengths tried."
    full = [r for r in mi.rows if r.strength == 0]
    if full:
        cheapest = min(full, key=lambda r: r.delta_ce)
        deepest = min(full, key=lambda r: r.bos_attention)
        text += (
            f" Removed completely (s = 0), `{deepest.edit}` leaves the least sink ({_f(deepest.pct_baseline, '.1f')}%, {_f(deepest.delta_ce, '+.3f')} nats) and "
            f"`{cheapest.edit}` costs the least ({_f(cheapest.delta_ce, '+.3f')} nats, {_f(cheapest.pct_baseline, '.1f')}% left)."
        )
    for na in mi.not_applicable.values():
        for e, why in na.items():
            text += f" `{e}` does not apply: {why}."
    return text.strip()


def _window(s: dict) -> str:
    w = s["query_window"]
    return (
        f"{w[0]}..{w[1] - 1}"
        if isinstance(w, list)
        else f"{w} (lengths {s['seq_len_range'][0]}..{s['seq_len_range'][1]})"
    )


def measure_text(s: dict) -> str:
    """A measure summary as a table: BOS attention per domain, SE, ±2SE, all layers, sink rate."""
    b0, b1 = s["layer_band"]
    lines = [
        f"model {s['model']}: {s['n_examples']} inputs x {s['seq_len']} tokens"
        + (
            f" (shorter texts kept whole: {s['seq_len_range'][0]}..{s['seq_len_range'][1]})"
            if isinstance(s["query_window"], str)
            else ""
        )
        + (f" (skipped as too short: {s['skipped_short']})" if s["skipped_short"] else ""),
        f"BOS attention, layers {b0}..{b1 - 1} (0-based), queries {_window(s)}; uniform attention would give {s['uniform_baseline']:.3f}",
        f"  {'domain':<12}{'n':>5}{'mean':>9}{'SE':>8}{'±2SE':>18}{'all layers':>12}{'Sink_0^' + str(s['sink_rate']['eps']):>12}",
    ]
    for dom, a in s["bos_attention"].items():
        al = s["bos_attention_all_layers"][dom]["mean"]
        pct = f"  {a['pct_baseline']:.1f}% of baseline" if "pct_baseline" in a else ""
        lines.append(
            f"  {dom:<12}{a['n']:>5}{a['mean']:>9.3f}{a['se']:>8.4f}   [{a['ci_low']:.3f}, {a['ci_high']:.3f}]{al:>12.3f}{s['sink_rate'][dom]:>12.3f}{pct}"
        )
    per_layer = s["bos_attention_per_layer"]["all"]
    lines.append("  per layer (all): " + " ".join(f"{v:.2f}" for v in per_layer))
    if "sink_logit_mass" in s:  # GPT-OSS: the learned sink logit's share beside index 0's
        lines.append(
            f"  learned sink logit takes {s['sink_logit_mass']['all']['mean']:.4f} of each query's attention "
            "(layers as above; with it, each query's attention sums to 1)"
        )
    return "\n".join(lines)
