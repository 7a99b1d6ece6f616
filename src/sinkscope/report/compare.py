"""Figures of ``sinkscope compare`` and ``sinkscope mitigate`` (layout rules:
:mod:`sinkscope.report.figures`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .figures import (
    legend_below,
    legend_right,
    prob_ylim,
    save_figure,
    subplots,
    suptitle,
    title,
    wrap,
)

if TYPE_CHECKING:
    import os
    from pathlib import Path
    from typing import Any

    import pandas as pd


def compare_figure(result: Any, path: str | os.PathLike) -> Path:
    """Left: sink strength per model and domain. Right: each matching intervention's BOS
    attention (% of baseline) per model, with its Δ cross-entropy written on the bar."""
    from ..interventions.labels import COMPARE_EDITS

    t = result.rows
    models = list(dict.fromkeys(t.model))
    domains = list(dict.fromkeys(t.domain))
    fig, (a1, a2) = subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [1, 1.6]})
    w = 0.8 / len(domains)
    vals_all = []
    for j, d in enumerate(domains):
        vals = [t[(t.model == m) & (t.domain == d)].bos_attention.iloc[0] for m in models]
        vals_all += vals
        a1.bar(np.arange(len(models)) + (j - (len(domains) - 1) / 2) * w, vals, w, label=d)
    a1.set_xticks(range(len(models)), [wrap(m, 4.0 / len(models), 7) for m in models], fontsize=7)
    a1.set_ylabel("attention to index 0 (layer band)")
    prob_ylim(a1, vals_all)
    legend_right(a1, fontsize=7, title="inputs", title_fontsize=7)
    allv = np.asarray(
        t[t.domain == "all"].bos_attention if "all" in domains else t.bos_attention, dtype=float
    )
    title(
        a1,
        f"BOS attention per model: {np.nanmin(allv):.2f} to {np.nanmax(allv):.2f}"
        + (" (all inputs)" if "all" in domains else ""),
    )
    allrows = t[t.domain == "all"]
    edits = [e for e in COMPARE_EDITS if f"{e}_pct" in t.columns]
    w = 0.8 / len(models)
    pcts = []
    for i, m in enumerate(models):
        r = allrows[allrows.model == m].iloc[0]
        x = np.arange(len(edits)) + (i - (len(models) - 1) / 2) * w
        pct = np.array([r[f"{e}_pct"] for e in edits], dtype=float)
        pcts += list(pct)
        a2.bar(x, np.nan_to_num(pct, nan=0.0), w, label=wrap(m, 2.2, 7))
        for xi, e, p in zip(x, edits, pct):
            txt = "n/a" if np.isnan(p) else f"{r[f'{e}_delta_ce']:+.2f}"
            a2.text(
                xi,
                (0 if np.isnan(p) else max(p, 0)),
                " " + txt,
                ha="center",
                va="bottom",
                fontsize=6,
                rotation=90,
            )
    a2.axhline(100, color="grey", lw=0.8, ls="--", label="baseline (100%)")
    a2.set_xticks(
        range(len(edits)),
        [
            e + "\n" + "\n".join(wrap(COMPARE_EDITS[e], 7.0 / max(len(edits), 1), 6).split("\n"))
            for e in edits
        ],
        fontsize=6,
    )
    p = np.r_[[x for x in pcts if np.isfinite(x)], 100.0]
    lo = min(0.0, float(p.min()))
    hi = float(p.max())
    a2.set_ylim(
        lo - 0.02 * (hi - lo), hi + 0.22 * (hi - lo)
    )  # room for the Δ CE numbers above the bars
    a2.set_ylabel("BOS attention, % of baseline")
    legend_right(a2, fontsize=7, title="model", title_fontsize=7)
    title(
        a2,
        "Matching interventions: BOS attention left, % of each model's baseline (numbers: Δ cross-entropy, nats)",
    )
    return save_figure(fig, path)


def tradeoff_figure(df: pd.DataFrame, model: str, path: str | os.PathLike) -> Path:
    """Sink left vs cross-entropy added, one panel per domain, one line per edit (dots: strengths;
    the line's end is labelled with the smallest strength)."""
    from ..interventions.labels import SCALABLE_TEXT as EDIT_TEXT

    d = df[df.model == model]
    domains = list(dict.fromkeys(d.domain))
    fig, axes = subplots(1, len(domains), figsize=(3.6 * len(domains) + 0.6, 3.9), squeeze=False)
    for ax, dom in zip(axes[0], domains):
        dd = d[d.domain == dom]
        span = np.array(
            [
                np.ptp(dd.delta_ce.to_numpy(dtype=float)) or 1.0,
                np.ptp(dd.bos_attention.to_numpy(dtype=float)) or 1.0,
            ]
        )
        labelled = []
        for e, g in dd.groupby("edit", sort=False):
            g = g.sort_values("strength", ascending=False)
            ax.plot(g.delta_ce, g.bos_attention, marker="o", ms=3, label=EDIT_TEXT.get(e, e))
            last = g.iloc[-1]
            at = np.array([last.delta_ce, last.bos_attention], dtype=float) / span
            if (
                last.strength < 1
                and np.isfinite(at).all()
                and all(np.abs(at - q).max() > 0.04 for q in labelled)
            ):  # one label per place
                labelled.append(at)
                ax.annotate(
                    f"s={last.strength:g}",
                    (last.delta_ce, last.bos_attention),
                    fontsize=6,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.set_xlabel("Δ cross-entropy (nats)")
        title(ax, dom, 9)
        vals = d[d.domain == dom].bos_attention.to_numpy(dtype=float)
        ax.set_ylim(
            min(0.0, float(np.nanmin(vals))),
            float(np.nanmax(vals)) * 1.1 if np.nanmax(vals) > 0 else 1.0,
        )  # from 0 to the data
        ax.margins(x=0.08)
    axes[0][0].set_ylabel("attention to index 0 (layer band)")
    legend_below(fig, ncol=min(len(EDIT_TEXT), 4))
    suptitle(
        fig,
        f"{model}: sink left vs loss added as each component is scaled by s (s = share kept; every line starts at s=1, no edit)",
    )
    return save_figure(fig, path)
