"""Figures of ``sinkscope explain``: the paper's Figs 1-4 and 6-8 and the residual-norm profile,
and :func:`explain_figures`, which writes every one a result supports. Titles state what the data
show (computed from them), never the paper's claim; layout rules: :mod:`sinkscope.report.figures`.
Re-exported by :mod:`sinkscope.report.circuit`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .figures import fmt_num, legend_right, save_figure, subplots
from .figures import title as set_title
from .formats import figure_name

if TYPE_CHECKING:
    import os
    from pathlib import Path
    from typing import Any, Sequence

    import pandas as pd


def _finite(x) -> np.ndarray:
    x = np.asarray(x, dtype=float).ravel()
    return x[np.isfinite(x)]


def delta_histograms(
    delta_rc: np.ndarray,
    band: tuple[int, int],
    path: str | os.PathLike,
    *,
    truncate: float | None = None,
    title_suffix: str = "",
) -> Path:
    """Fig 1 / Fig 6: re-centred Δ at index 0 vs the other positions (layers in ``band``, pooled).
    ``truncate``: the x-axis ends there (larger values are counted in the last bin, and the
    title says so) unless every value is below it."""
    d = delta_rc[:, band[0] : band[1]]  # [example, layer, head, pos]
    first, rest = _finite(d[..., 0]), _finite(d[..., 1:])
    top = float(max(first.max(initial=0.0), rest.max(initial=0.0)))
    cut = truncate is not None and truncate < top
    hi = float(truncate) if cut else top
    bins = np.linspace(0, hi if hi > 0 else 1.0, 80)
    fig, ax = subplots(figsize=(7.4, 3.6))
    ax.hist(
        np.clip(rest, 0, hi),
        bins=bins,
        density=True,
        alpha=0.6,
        color="C0",
        label=f"other positions (n={rest.size:,})",
    )
    ax.hist(
        np.clip(first, 0, hi),
        bins=bins,
        density=True,
        alpha=0.6,
        color="C3",
        label=f"index 0 (n={first.size:,})",
    )
    m0 = float(np.median(first)) if first.size else float("nan")
    m1 = float(np.median(rest)) if rest.size else float("nan")
    ax.axvline(m0, color="C3", ls="--", lw=1, label=f"median, index 0: {fmt_num(m0)}")
    ax.axvline(m1, color="C0", ls="--", lw=1, label=f"median, others: {fmt_num(m1)}")
    ax.set_xlim(0, bins[-1])
    ax.set_xlabel(
        "re-centred Δ = b_Q·W_K x_j − min_j (per example, layer, head)"
        + (f"; values above {hi:.3g} in the last bin" if cut else "")
    )
    ax.set_ylabel("density")
    legend_right(ax)
    ratio = f" ({m0 / m1:.1f}x)" if m1 > 0 and np.isfinite(m0) else ""
    if cut and not title_suffix:
        title_suffix = f" (x-axis cut at {hi:.3g})"
    set_title(
        ax,
        f"Re-centred Δ, layers {band[0]}..{band[1] - 1}{title_suffix}: median {fmt_num(m0)} at index 0 vs {fmt_num(m1)} at the other positions{ratio}",
    )
    return save_figure(fig, path)


def alignment_strip(cos: np.ndarray, band: tuple[int, int], path: str | os.PathLike) -> Path:
    """Fig 2: cos(b_Q,h, W_K,h·EPE_j) per head; index 0 vs the other positions, per layer."""
    L = cos.shape[0]
    fig, ax = subplots(figsize=(max(6.5, 0.6 * L + 4.5), 3.6))
    rng = np.random.default_rng(0)
    for i in range(L):
        other = cos[i, :, 1:].ravel()
        ax.scatter(
            i - 0.15 + 0.1 * rng.standard_normal(other.size) * 0.3,
            other,
            s=3,
            color="C0",
            alpha=0.25,
            label="other positions" if i == 0 else None,
        )
        ax.scatter(
            i + 0.15 + 0.05 * rng.standard_normal(cos.shape[1]),
            cos[i, :, 0],
            s=14,
            color="C3",
            label="index 0 (one dot per head)" if i == 0 else None,
        )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(L), [str(band[0] + i) for i in range(L)])
    ax.set_xlabel("layer (0-based)")
    ax.set_ylabel("cos(b_Q, W_K · EPE_j)")
    first, rest = _finite(cos[:, :, 0]), _finite(cos[:, :, 1:])
    allv = np.r_[first, rest, 0.0]
    pad = 0.05 * max(float(allv.max() - allv.min()), 0.1)
    ax.set_ylim(max(-1.05, float(allv.min()) - pad), min(1.05, float(allv.max()) + pad))
    legend_right(ax, markerscale=2)
    if not first.size:
        what = "undefined: b_Q is zero (no query bias)"
    else:
        what = (
            f"index 0 mean {first.mean():+.2f} ({(first > 0).mean():.0%} of heads above 0) "
            f"vs {rest.mean():+.2f} at the other positions"
        )
    set_title(ax, f"cos(b_Q, W_K·EPE_j), layers {band[0]}..{band[0] + L - 1}: {what}")
    return save_figure(fig, path)


def epe_validation_band(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Fig 3: median cos(EPE_i, R_i − O_i) per position with the p10-p90 band."""
    fig, ax = subplots(figsize=(7.4, 3.4))
    ax.fill_between(
        table.position, table.p10, table.p90, color="C0", alpha=0.25, label="p10-p90 over inputs"
    )
    ax.plot(
        table.position, table["median"], marker="o", ms=3, color="C0", label="median over inputs"
    )
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel("position")
    ax.set_ylabel("cos(EPE_i, R_i − O_i)")
    vals = np.r_[_finite(table.p10), _finite(table.p90), _finite(table["median"]), 0.0]
    pad = 0.05 * max(float(vals.max() - vals.min()), 0.1)
    ax.set_ylim(max(-1.05, float(vals.min()) - pad), min(1.05, float(vals.max()) + pad))
    legend_right(ax)
    med = table["median"].to_numpy(dtype=float)
    pos = table.position.to_numpy()
    at0 = med[pos == 0]
    other = _finite(med[pos != 0])
    parts = [f"median {at0[0]:.2f} at index 0"] if at0.size else []
    if other.size:
        parts.append(
            f"{other.min():.2f} to {other.max():.2f} at positions {int(pos[pos != 0].min())}..{int(pos.max())}"
        )
    set_title(ax, "cos(EPE_i, R_i − O_i) per position: " + ", ".join(parts))
    return save_figure(fig, path)


def massive_coords_plot(
    epe0: np.ndarray, coords: Sequence[int], k_sigma: float, path: str | os.PathLike
) -> Path:
    """Fig 7: |EPE_0| per residual coordinate, the mean + kσ threshold (population std, the rule
    that chose ``coords``) and the coordinates above it."""
    a = np.abs(np.asarray(epe0, dtype=float))
    thr = a.mean() + k_sigma * a.std()
    fig, ax = subplots(figsize=(7.8, 3.4))
    ax.bar(np.arange(a.size), a, width=1.0, color="grey", label="|EPE_0[d]|")
    for j, c in enumerate(coords):
        ax.bar(
            [c],
            [a[c]],
            width=max(3, a.size // 200),
            color="C3",
            label="above the line" if j == 0 else None,
        )
        ax.annotate(
            f"{c}: {fmt_num(epe0[c])}",
            (c, a[c]),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            va="bottom",
            fontsize=7,
            color="C3",
        )
    ax.axhline(thr, color="C0", ls=":", lw=1, label=f"mean + {k_sigma:g}σ = {fmt_num(thr)}")
    ax.set_xlim(-0.5 - a.size * 0.01, a.size - 0.5 + a.size * 0.01)
    ax.set_ylim(
        0, max(float(a.max()), thr) * 1.15 if a.size and max(float(a.max()), thr) > 0 else 1.0
    )
    ax.set_xlabel("residual coordinate d")
    ax.set_ylabel("|EPE_0[d]|")
    legend_right(ax)
    top = int(np.argmax(a)) if a.size else 0
    med = float(np.median(a)) if a.size else 0.0
    big = (
        f"largest: coordinate {top}, {a[top] / med:.1f}x the median"
        if med > 0
        else f"largest: coordinate {top}"
    )
    if len(coords):
        head = f"{len(coords)} coordinate{'s' if len(coords) != 1 else ''} of EPE_0 above mean + {k_sigma:g}σ ({', '.join(map(str, coords))})"
    else:
        head = f"no coordinate of EPE_0 above mean + {k_sigma:g}σ"
    set_title(ax, f"|EPE_0| per coordinate: {head}; {big}")
    return save_figure(fig, path)


def gamma_title(table: pd.DataFrame) -> str:
    """What the |γ| values show: the massive coordinates' mean against the others' (or that every
    |γ| is 0, or that there are no massive coordinates)."""
    g = np.asarray(table.abs_gamma, dtype=float)
    m = np.asarray(table.abs_gamma[table.massive], dtype=float)
    o = np.asarray(table.abs_gamma[~table.massive], dtype=float)
    coords = sorted({int(c) for c in table.coord[table.massive]})
    if g.size and not np.any(g):
        return "|γ| is 0 everywhere (b_Q is zero: no query bias)"
    if not m.size:
        return (
            f"|γ|: no massive coordinates chosen (mean over all coordinates {fmt_num(o.mean())})"
            if o.size
            else "|γ|: no values"
        )
    if not o.size or o.mean() == 0:
        return f"|γ| on coords {coords}: mean {fmt_num(m.mean())}; the other coordinates' |γ| is 0"
    return f"|γ| on coords {coords}: {m.mean() / o.mean():.1f}x the other coordinates (mean {fmt_num(m.mean())} vs {fmt_num(o.mean())})"


def gamma_histograms(
    table: pd.DataFrame, path: str | os.PathLike, *, truncate: float | None = 4.0
) -> Path:
    """Fig 4 (x-axis cut at ``truncate``, larger values in the last bin) / Fig 8 (full): |γ| on the
    massive coordinates vs the rest."""
    m = np.asarray(table.abs_gamma[table.massive], dtype=float)
    o = np.asarray(table.abs_gamma[~table.massive], dtype=float)
    top = float(max(m.max(initial=0.0), o.max(initial=0.0)))
    cut = truncate is not None and truncate < top
    hi = float(truncate) if cut else top
    fig, ax = subplots(figsize=(7.4, 3.4))
    if hi > 0:
        bins = np.linspace(0, hi, 60)
        if o.size:
            ax.hist(
                np.clip(o, 0, hi),
                bins=bins,
                density=True,
                alpha=0.6,
                color="C0",
                label=f"other coords: mean {fmt_num(o.mean())} (n={o.size:,})",
            )
        if m.size:
            ax.hist(
                np.clip(m, 0, hi),
                bins=bins,
                density=True,
                alpha=0.6,
                color="C3",
                label=f"massive coords: mean {fmt_num(m.mean())} (n={m.size:,})",
            )
        ax.set_xlim(0, hi)
        legend_right(ax)
    else:
        ax.text(
            0.5,
            0.5,
            f"every |γ| is 0 ({m.size + o.size:,} values)",
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=9,
            color="grey",
        )
    ax.set_xlabel(
        "|γ_h[d]| = |b_Q,h · W_K,h[d, :]|"
        + (f"; values above {hi:g} in the last bin" if cut else "")
    )
    ax.set_ylabel("density")
    set_title(ax, gamma_title(table))
    return save_figure(fig, path)


def residual_norms(table: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> Path:
    """||a_0|| against the median norm of the other positions after every block (log scale)."""
    fig, ax = subplots(figsize=(7.6, 3.4))
    ax.semilogy(table.block, table.norm_index0, marker="o", ms=3, color="C3", label="index 0")
    ax.semilogy(
        table.block,
        table.median_norm_other,
        marker="o",
        ms=3,
        color="C0",
        label="other positions (median)",
    )
    ax.set_xlabel("after block (-1 = embeddings)")
    ax.set_ylabel("residual L2 norm")
    legend_right(ax)
    if not title:
        r = np.asarray(table.norm_index0, dtype=float) / np.asarray(
            table.median_norm_other, dtype=float
        )
        j = int(np.nanargmax(r))
        title = f"Residual norm of index 0 over the others' median: at most {r[j]:.1f}x (after block {int(table.block.iloc[j])})"
    set_title(ax, title)
    return save_figure(fig, path)


def residual_title(r: dict) -> str:
    """What the residual profile shows, from explain's ``residual`` summary."""
    peak = f"peak {r['max_norm_ratio']:.1f}x after block {r['max_norm_ratio_block']}"
    if r.get("creating_block") is not None:
        mc = r.get("massive_coords") or []
        coords = (
            f"; massive coords {', '.join(map(str, mc[:8]))}{' …' if len(mc) > 8 else ''}"
            if mc
            else ""
        )
        return f"Index 0's residual norm exceeds 5x the others' median from block {r['creating_block']} on ({peak}){coords}"
    return f"Index 0's residual norm never exceeds 5x the others' median ({peak})"


EXPLAIN_CAPTIONS = {
    "fig1_delta_hist": "Fig 1: the source-agnostic shift Δ_j = b_Q·W_K x_j (re-centred) at index 0 vs every other position, layer band; the x-axis ends at 3x the others' 99.5th percentile (larger values in the last bin).",
    "fig6_delta_hist_full": "Fig 6: the same histogram without truncation.",
    "residual_norms": "Residual-stream norm of index 0 vs the other positions after every block: where the first position becomes special (5x the others' median).",
    "fig2_alignment": "Fig 2: cos(b_Q, W_K·EPE_j) per head; index 0 (red) against the other positions (blue).",
    "fig3_epe_validation": "Fig 3: cos(EPE_i, R_i − O_i), how well the input-independent EPE predicts what position adds after the first MLP.",
    "fig4_gamma_hist": "Fig 4: |γ_h[d]| = |b_Q,h · W_K,h[d]| on the massive coordinates vs the other coordinates (x-axis cut at 4 where values exceed it).",
    "fig8_gamma_hist_full": "Fig 8: the same without clipping.",
    "fig7_massive_coords": "Fig 7: |EPE_0| per residual coordinate; the massive coordinates exceed mean + kσ.",
}


def explain_figures(res: Any, out: str | os.PathLike, *, k_sigma: float = 3.0) -> dict[str, str]:
    """Every figure an :class:`~sinkscope.stages.explain.ExplainResult` supports, in ``out``
    and the run's format; returns ``{file name: caption}`` (figures whose analysis was skipped are
    left out)."""
    from pathlib import Path

    out = Path(out)
    s = res.data
    band = tuple(s["layer_band"])
    made = []
    if "delta_rc" in res.arrays:
        d = res.arrays["delta_rc"]
        rest = d[:, band[0] : band[1], :, 1:]
        delta_histograms(
            d,
            band,
            out / figure_name("fig1_delta_hist"),
            truncate=float(np.nanpercentile(rest, 99.5)) * 3,
        )
        delta_histograms(d, band, out / figure_name("fig6_delta_hist_full"))
        made += ["fig1_delta_hist", "fig6_delta_hist_full"]
    if "residual_profile" in res.dataframes:
        residual_norms(
            res.dataframes["residual_profile"],
            out / figure_name("residual_norms"),
            title=residual_title(s["residual"]) if "residual" in s else "",
        )
        made.append("residual_norms")
    if "alignment" in res.arrays:
        alignment_strip(res.arrays["alignment"], band, out / figure_name("fig2_alignment"))
        made.append("fig2_alignment")
    if "epe_validation" in res.dataframes:
        epe_validation_band(
            res.dataframes["epe_validation"], out / figure_name("fig3_epe_validation")
        )
        made.append("fig3_epe_validation")
    if "gamma" in res.dataframes:
        gamma_histograms(
            res.dataframes["gamma"], out / figure_name("fig4_gamma_hist"), truncate=4.0
        )
        gamma_histograms(
            res.dataframes["gamma"], out / figure_name("fig8_gamma_hist_full"), truncate=None
        )
        made += ["fig4_gamma_hist", "fig8_gamma_hist_full"]
    if "epe0" in res.arrays:
        massive_coords_plot(
            res.arrays["epe0"],
            s["epe"]["massive_coords"],
            k_sigma,
            out / figure_name("fig7_massive_coords"),
        )
        made.append("fig7_massive_coords")
    return {figure_name(stem): EXPLAIN_CAPTIONS[stem] for stem in made}
