"""The training-dynamics figure: one panel per trajectory, sharing the step axis (layout rules:
:mod:`sinkscope.report.figures`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .figures import fmt_num, legend_right, prob_ylim, save_figure, subplots, title

if TYPE_CHECKING:
    import os
    from pathlib import Path
    from typing import Any


def dynamics_figure(result: Any, path: str | os.PathLike) -> Path:
    """Sink (with the onset threshold), EPE max, b_Q / EPE-key alignment, intervention efficacy
    and the query pathways' shares over the saved steps of ``result`` (a ``DynamicsResult``)."""
    f = result.frame
    x = f["step"].to_numpy()
    fig, axes = subplots(5, 1, figsize=(7.8, 12.5), sharex=True)
    onset = result.onset()
    if onset is not None and onset > x[0]:
        for ax in axes:  # before the onset the heads attend about evenly, and the shares say little
            ax.axvspan(
                x[0],
                onset,
                color="0.93",
                zorder=0,
                label="before the onset" if ax is axes[0] else None,
            )
    _sink_panel(axes[0], f, x, onset, result.meta["threshold"])
    _epe_panel(axes[1], f, x)
    _alignment_panel(axes[2], f, x)
    _edits_panel(axes[3], f, x)
    _pathways_panel(axes[4], f, x)
    axes[4].set_xlabel("training step")
    return save_figure(fig, path)


def _sink_panel(ax, f, x, onset, thr) -> None:
    """The sink per step (all inputs and each domain), the onset level and the onset step."""
    ax.plot(x, f["sink"], "o-", color="C3", label="all inputs", lw=1.6)
    for j, dom in enumerate(
        c[5:]
        for c in f.columns
        if c.startswith("sink_") and c not in ("sink_se", "sink_all_layers")
    ):
        ax.plot(x, f[f"sink_{dom}"], ".--", color=f"C{j}", lw=0.9, label=dom)
    ax.axhline(thr, color="grey", ls=":", lw=1, label=f"onset level {fmt_num(thr)}")
    if onset is not None:
        ax.axvline(onset, color="grey", ls="--", lw=1, label=f"onset: step {onset}")
    prob_ylim(
        ax,
        np.r_[
            f.filter(like="sink")
            .drop(columns=["sink_se"], errors="ignore")
            .to_numpy(dtype=float)
            .ravel(),
            thr,
        ],
    )
    ax.set_ylabel("attention to index 0")
    legend_right(ax, fontsize=7)
    title(
        ax,
        f"Sink (paper metric, layer band): {f['sink'].iloc[0]:.3f} at step {x[0]} -> {f['sink'].iloc[-1]:.3f} at step {x[-1]}"
        + (
            f", peak {f['sink'].max():.3f} at step {int(f.loc[f['sink'].idxmax(), 'step'])}"
            if len(f) > 1
            else ""
        )
        + (f"; onset at step {onset}" if onset is not None else "; no onset"),
    )


def _epe_panel(ax, f, x) -> None:
    """max |EPE_0| per step (where the model has an EPE)."""
    if f["epe_max"].notna().any():
        ax.plot(x, f["epe_max"], "o-", color="C4")
        k = int(f["epe_max"].idxmax())
        title(
            ax,
            f"max |EPE_0|: peak {f['epe_max'].max():.2f} at step {int(f.loc[k, 'step'])}, {f['epe_max'].iloc[-1]:.2f} at the end",
        )
    else:
        title(ax, "max |EPE_0|: not defined for this model (no learned positions + MLP)")
    ax.set_ylabel("max_d |EPE_0[d]|")


def _alignment_panel(ax, f, x) -> None:
    """cos(b_Q, W_K·EPE_j) at index 0 against the other positions, per step."""
    if f["align_index0"].notna().any():
        ax.plot(x, f["align_index0"], "o-", color="C3", label="key of EPE_0")
        ax.plot(x, f["align_other"], ".--", color="C0", label="keys of EPE_j, j>0")
        ax.axhline(0, color="grey", lw=0.6)
        legend_right(ax, fontsize=7)
        title(
            ax,
            f"cos(b_Q, W_K·EPE_j), band mean: {f['align_index0'].iloc[-1]:+.3f} at index 0 vs {f['align_other'].iloc[-1]:+.3f} elsewhere at the end",
        )
    else:
        title(ax, "b_Q / EPE-key alignment: not defined for this model (no b_Q or no EPE)")
    ax.set_ylabel("cosine")


def _edits_panel(ax, f, x) -> None:
    """The sink left (% of baseline) under each edit, per step."""
    from ..interventions.labels import DYNAMICS_TEXT as EDIT_TEXT

    for j, (k, text) in enumerate(EDIT_TEXT.items()):
        if f[f"pct_{k}"].notna().any():
            ax.plot(x, f[f"pct_{k}"], "o-", color=f"C{j}", label=text)
    ax.axhline(100, color="grey", lw=0.6)
    ax.set_ylabel("sink left (% of baseline)")
    legend_right(ax, fontsize=7)
    last = ", ".join(
        f"{EDIT_TEXT[k]} {f[f'pct_{k}'].iloc[-1]:.0f}%"
        for k in EDIT_TEXT
        if f[f"pct_{k}"].notna().any()
    )
    title(ax, f"Sink left under each edit (lower = the edit removes more): at the end {last}")


def _pathways_panel(ax, f, x) -> None:
    """Attention to index 0 from one term of the query over the full query's, per step."""
    for r, lab, c in (
        ("shared", "q̄ alone (source-agnostic)", "C3"),
        ("content", "q̃_i − q̄ alone (content)", "C0"),
        ("bq", "b_Q alone", "C2"),
    ):
        if f[f"share_{r}"].notna().any():
            ax.plot(x, f[f"share_{r}"], "o-", color=c, label=lab)
    ax.axhline(1, color="grey", lw=0.6)
    ax.set_ylabel("route / full query")
    legend_right(ax, fontsize=7)
    title(
        ax,
        f"Query pathways: attention to index 0 from one term over the full query's; at the end q̄ {f['share_shared'].iloc[-1]:.2f}, "
        f"content {f['share_content'].iloc[-1]:.2f}",
    )
