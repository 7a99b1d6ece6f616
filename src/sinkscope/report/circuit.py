"""Figures of ``sinkscope explain`` (the paper's Figs 1-4 and 6-8), ``intervene`` (Fig 5, the
Table 1 bars) and reproduce's shared-query stage. Titles state what the data show (computed from
them), never the paper's claim; see :mod:`sinkscope.report.figures` for the layout rules.

explain's figures live in :mod:`.circuit_explain`, intervene's in :mod:`.circuit_interventions`;
every name is importable from here as before."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .circuit_explain import (
    EXPLAIN_CAPTIONS,
    _finite,
    alignment_strip,
    delta_histograms,
    epe_validation_band,
    explain_figures,
    gamma_histograms,
    gamma_title,
    massive_coords_plot,
    residual_norms,
    residual_title,
)
from .circuit_interventions import attention_grid, intervention_bars
from .figures import (  # noqa: F401  (the shared helpers stay importable from here, as before)
    fmt_num,
    legend_below,
    legend_right,
    prob_ylim,
    save_figure,
    subplots,
    suptitle,
    wrap,
)
from .figures import title as set_title
from .formats import figure_name  # noqa: F401

if TYPE_CHECKING:
    import os

    import pandas as pd

__all__ = [
    "EXPLAIN_CAPTIONS",
    "SHARE_ABOVE_1",
    "SHARE_BELOW_0",
    "SHARE_NO_ADV",
    "alignment_strip",
    "attention_grid",
    "delta_histograms",
    "epe_validation_band",
    "explain_figures",
    "gamma_histograms",
    "gamma_title",
    "intervention_bars",
    "massive_coords_plot",
    "residual_norms",
    "residual_title",
    "shared_query_layers",
]


SHARE_ABOVE_1 = (
    "A share above 1: the part of the query shared by all positions (q̄) gives index 0 more logit advantage than the "
    "whole query does, i.e. the position-specific rest of the query works against index 0"
)
SHARE_BELOW_0 = "a share below 0: that part of the query favours the other keys over index 0"
SHARE_NO_ADV = "where the whole query gives index 0 no advantage (≤ 0) the share is not meaningful"


def shared_query_layers(frame: pd.DataFrame, band: tuple[int, int], path: str | os.PathLike) -> str:
    """Per layer (mean over heads): the share of index 0's logit advantage that the effective
    query bias q̄ explains, and the literal b_Q term's share where the model has one. Returns the
    caption, which explains shares above 1 (and below 0) where the figure shows any."""
    cols = ["shared_query_share", "bq_share"] + (
        ["index0_advantage"] if "index0_advantage" in frame else []
    )
    g = frame.groupby("layer")[cols].mean()
    fig, ax = subplots(figsize=(7.8, 3.6))
    x = g.index.to_numpy()
    has_bq = bool(g.bq_share.notna().any())
    ax.bar(x - 0.2 if has_bq else x, g.shared_query_share, 0.4, color="C3", label="shared query q̄")
    if has_bq:
        ax.bar(x + 0.2, g.bq_share, 0.4, color="C1", label="literal b_Q")
    ax.axvspan(
        band[0] - 0.5,
        band[1] - 0.5,
        color="grey",
        alpha=0.12,
        lw=0,
        label=f"layers {band[0]}..{band[1] - 1}",
    )
    ax.axhline(1, color="grey", lw=0.8, ls="--", label="1 = all of the advantage")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(x if len(x) <= 16 else x[:: max(1, len(x) // 12)])
    ax.set_xlabel("layer (0-based)")
    ax.set_ylabel("share of index 0's logit advantage")
    vals = np.r_[_finite(g.shared_query_share), _finite(g.bq_share), 0.0, 1.0]
    pad = 0.06 * float(vals.max() - vals.min())
    ax.set_ylim(float(vals.min()) - pad, float(vals.max()) + pad)
    shares = np.r_[_finite(g.shared_query_share), _finite(g.bq_share) if has_bq else []]
    notes = []
    if (shares > 1).any():
        notes.append(SHARE_ABOVE_1)
    if (shares < 0).any():
        notes.append(SHARE_BELOW_0)
    if "index0_advantage" in g and (g.index0_advantage <= 0).any():
        bad = ", ".join(str(int(i)) for i in g.index[g.index0_advantage <= 0])
        notes.append(f"{SHARE_NO_ADV} (layer{'s' if ',' in bad else ''} {bad})")
    legend_right(ax)
    sq = _finite(g.shared_query_share.loc[[i for i in g.index if band[0] <= i < band[1]]])
    every = _finite(g.shared_query_share)
    what = (
        f"{sq.min():.2f} to {sq.max():.2f} per layer in layers {band[0]}..{band[1] - 1}"
        if sq.size
        else f"{every.min():.2f} to {every.max():.2f} per layer"
        if every.size
        else "undefined in every layer (index 0 has no advantage)"
    )
    set_title(ax, f"Share of index 0's logit advantage from the shared query q̄: {what}")
    note = ""
    if notes:
        note = "; ".join(notes) + "."
        note = note[0].upper() + note[1:]
        fig.supxlabel(wrap(note, fig.get_figwidth() * 0.95, 7), fontsize=7, color="#444444")
    save_figure(fig, path)
    caption = (
        "Share of index 0's logit advantage over the other keys explained by the effective query bias q̄ (red) and by the literal "
        "b_Q (orange), per layer, mean over heads; 1 = all of it."
    )
    return caption + (" " + note if note else "")
