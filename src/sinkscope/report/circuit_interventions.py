"""Figures of ``sinkscope intervene``: Fig 5's attention maps and the Table 1 bars. Titles state
what the data show; layout rules: :mod:`sinkscope.report.figures`. Re-exported by
:mod:`sinkscope.report.circuit`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .figures import legend_below, prob_ylim, save_figure, subplots, suptitle, wrap
from .figures import title as set_title

if TYPE_CHECKING:
    import os
    from pathlib import Path

    import pandas as pd


def attention_grid(
    maps: dict, labels: dict, tokens: list[str], path: str | os.PathLike, *, title: str = ""
) -> Path:
    """Fig 5: one head- and layer-averaged attention map per intervention (n/a panels greyed)."""
    ids = list(maps)
    cols = min(5, len(ids))
    rows = (len(ids) + cols - 1) // cols
    fig, axes = subplots(rows, cols, figsize=(2.9 * cols + 0.9, 3.2 * rows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    im = None
    for ax, rid in zip(axes.ravel(), ids):
        m = maps[rid]
        ax.set_title(wrap(f"({rid}) {labels.get(rid, '')}", 2.7, 7), fontsize=7)
        if m is None:
            ax.text(
                0.5,
                0.5,
                "not applicable",
                ha="center",
                va="center",
                fontsize=8,
                color="grey",
                transform=ax.transAxes,
            )
            continue
        ax.axis("on")
        im = ax.imshow(m, vmin=0, vmax=1, cmap="magma")  # attention weights: always in [0, 1]
        ax.set_xticks([0, 1])
        ax.set_yticks([])
        ax.tick_params(labelsize=6)
        ax.text(
            0.98,
            0.02,
            f"→0: {m[m.shape[0] // 2 :, 0].mean():.2f}\n→1: {m[m.shape[0] // 2 :, 1].mean():.2f}",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=6,
            color="white",
        )
    if im is not None:
        cb = fig.colorbar(im, ax=axes, shrink=0.6, aspect=30)
        cb.set_label("attention", fontsize=8)
        cb.ax.tick_params(labelsize=7)
    suptitle(
        fig,
        title
        or "Attention (mean over heads and band layers); rows: queries, columns: keys; →0 / →1: mean attention of the second half's queries to index 0 / 1",
        9,
    )
    return save_figure(fig, path)


def intervention_bars(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Sink left (% of baseline) and loss added (Δ CE, nats) per intervention, ±2SE."""
    t = table[(table.scope == "mid") & (table.dataset == "all")]
    ids = list(t.intervention)
    fig, (a1, a2) = subplots(1, 2, figsize=(10, 3.9))
    ok = t.applicable.to_numpy(dtype=bool)
    x = np.arange(len(ids))
    mean, se, to1 = (
        t["mean"].to_numpy(dtype=float),
        t.se.to_numpy(dtype=float),
        t.attn_to_1.to_numpy(dtype=float),
    )
    a1.bar(
        x[ok],
        mean[ok],
        yerr=2 * np.nan_to_num(se[ok]),
        capsize=3,
        color="C3",
        label="attention to index 0 (±2SE)",
    )
    a1.bar(x[ok] + 0.3, to1[ok], width=0.3, color="C0", label="attention to index 1 (relocation)")
    a1.set_xticks(x, ids)
    a1.set_ylabel("BOS attention (layer band)")
    prob_ylim(
        a1,
        np.r_[mean[ok] + 2 * np.nan_to_num(se[ok]), mean[ok] - 2 * np.nan_to_num(se[ok]), to1[ok]],
    )
    for i in x[~ok]:
        a1.text(
            i,
            0.02 * a1.get_ylim()[1],
            "n/a",
            ha="center",
            va="bottom",
            fontsize=7,
            color="grey",
            rotation=90,
        )
    dce, dse = t.delta_ce.to_numpy(dtype=float), t.delta_ce_se.fillna(0).to_numpy(dtype=float)
    a2.bar(x[ok], dce[ok], yerr=2 * dse[ok], capsize=3, color="C2", label="Δ CE (±2SE)")
    a2.axhline(0, color="grey", lw=0.8)
    a2.set_xticks(x, ids)
    a2.set_ylabel("Δ next-token CE vs baseline (nats)")
    s1 = "BOS attention under each intervention"
    if ok.any():
        base = mean[(np.asarray(ids) == "a") & ok]
        j = int(np.nanargmin(np.where(ok, mean, np.nan)))
        s1 += (
            f": baseline {base[0]:.2f}, " if base.size else ": "
        ) + f"lowest {mean[j]:.2f} ({ids[j]})"
        k = int(np.nanargmax(np.where(ok, dce, np.nan)))
        s2 = f"Loss added: at most {dce[k]:+.2f} nats ({ids[k]})"
    else:
        s2 = "Loss added: no intervention applicable"
    set_title(a1, s1)
    set_title(a2, s2)
    legend_below(fig, ncol=3)
    return save_figure(fig, path)
