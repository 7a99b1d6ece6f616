"""Figures of ``sinkscope compare`` and ``sinkscope mitigate``."""
from __future__ import annotations

import numpy as np

from .figures import plt, save_figure


def compare_figure(result, path):
    """Left: sink strength per model and domain. Right: each matching intervention's BOS
    attention (% of baseline) per model, with its Δ cross-entropy written on the bar."""
    from ..experiments.compare import COMPARE_EDITS

    t = result.rows
    models = list(dict.fromkeys(t.model))
    domains = list(dict.fromkeys(t.domain))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1, 1.6]})
    w = 0.8 / len(domains)
    for j, d in enumerate(domains):
        vals = [t[(t.model == m) & (t.domain == d)].bos_attention.iloc[0] for m in models]
        a1.bar(np.arange(len(models)) + (j - (len(domains) - 1) / 2) * w, vals, w, label=d)
    a1.set_xticks(range(len(models)), [m[:28] for m in models], rotation=15, fontsize=7)
    a1.set_ylabel("attention to index 0 (layer band)")
    a1.set_ylim(0, 1)
    a1.legend(fontsize=7)
    a1.set_title("Sink strength", fontsize=9)
    allrows = t[t.domain == "all"]
    edits = [e for e in COMPARE_EDITS if f"{e}_pct" in t.columns]
    w = 0.8 / len(models)
    for i, m in enumerate(models):
        r = allrows[allrows.model == m].iloc[0]
        x = np.arange(len(edits)) + (i - (len(models) - 1) / 2) * w
        pct = [r[f"{e}_pct"] for e in edits]
        a2.bar(x, np.nan_to_num(pct, nan=0.0), w, label=m[:28])
        for xi, e, p in zip(x, edits, pct):
            txt = "n/a" if np.isnan(p) else f"{r[f'{e}_delta_ce']:+.2f}"
            a2.text(xi, (0 if np.isnan(p) else p) + 2, txt, ha="center", fontsize=6, rotation=90)
    a2.axhline(100, color="grey", lw=0.8, ls="--")
    import textwrap

    a2.set_xticks(range(len(edits)), [e + "\n" + "\n".join(textwrap.wrap(COMPARE_EDITS[e], 18)) for e in edits], fontsize=6)
    a2.set_ylim(0, max(120, a2.get_ylim()[1]))
    a2.set_ylabel("BOS attention, % of baseline")
    a2.legend(fontsize=7)
    a2.set_title("Matching interventions (numbers: Δ cross-entropy, nats)", fontsize=9)
    return save_figure(fig, path)


def tradeoff_figure(df, model: str, path):
    """Sink left vs cross-entropy added, one panel per domain, one line per edit (dots: strengths)."""
    from ..experiments.mitigate import EDIT_TEXT

    d = df[df.model == model]
    domains = list(dict.fromkeys(d.domain))
    fig, axes = plt.subplots(1, len(domains), figsize=(4.2 * len(domains), 3.8), squeeze=False)
    for ax, dom in zip(axes[0], domains):
        for e, g in d[d.domain == dom].groupby("edit", sort=False):
            g = g.sort_values("strength", ascending=False)
            ax.plot(g.delta_ce, g.bos_attention, marker="o", ms=3, label=EDIT_TEXT.get(e, e))
            for _, r in g.iterrows():
                if r.strength in (0.0, 0.4):
                    ax.annotate(f"s={r.strength:g}", (r.delta_ce, r.bos_attention), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("Δ cross-entropy (nats)")
        ax.set_ylabel("attention to index 0 (layer band)")
        ax.set_title(dom, fontsize=9)
        ax.set_ylim(bottom=0)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(f"{model}: sink left vs loss added (s = strength kept)", fontsize=10)
    return save_figure(fig, path)
