"""Figures for ``measure`` results, and the helpers every figure module shares (matplotlib, Agg
backend, written atomically in the run's format: :mod:`sinkscope.report.formats`).

Layout rules every figure follows: constrained layout (titles, labels and colour bars fit the
figure); long titles and names are wrapped, never cut; legends sit outside the axes, so they
cannot cover data; axis ranges come from the data (a fixed [0, 1] only for a probability whose
values all lie in it); titles state what the data show.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io import publish_mode  # noqa: E402
from .figure_text import (  # noqa: E402,F401  (every figure module imports them from here)
    _CHUNK,
    _fit_ticklabels,
    _rewrap,
    axes_width,
    fill,
    fit_titles,
    suptitle,
    title,
    wrap,
)
from .formats import FIGURE_FORMATS, figure_format, figure_name, figure_path, preview_name  # noqa: E402,F401

if TYPE_CHECKING:
    from typing import Any, Sequence

    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.legend import Legend
    from numpy.typing import ArrayLike

DPI = 150
# svg: text as paths (renders the same everywhere), stable ids; pdf: TrueType fonts (venues reject Type 3)
_RC = {"svg.hashsalt": "sinkscope", "svg.fonttype": "path", "pdf.fonttype": 42}
_METADATA = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Save ``fig`` in the format its suffix names (``.png``, ``.svg`` or ``.pdf``) via a temporary
    file and ``os.replace``; a PDF also gets a PNG preview beside it (:func:`preview_name`, what
    the HTML report embeds). Closes the figure and returns ``path``."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        plt.close(fig)
        raise ValueError(
            f"figure file {path.name}: the suffix must be one of {', '.join('.' + f for f in FIGURE_FORMATS)}"
        )
    try:
        fit_titles(fig)
        _write(fig, path, fmt)
        if fmt == "pdf":
            _write(fig, path.with_name(preview_name(path.name)), "png")
    finally:
        plt.close(fig)
    return path


def _write(fig, path: Path, fmt: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".{fmt}", dir=path.parent)
    os.close(fd)
    try:
        with matplotlib.rc_context(_RC):
            fig.savefig(
                tmp,
                format=fmt,
                dpi=DPI,
                bbox_inches="tight",
                pad_inches=0.04,
                metadata=_METADATA[fmt],
            )
        publish_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --- layout helpers shared by the figure modules (text fitting: .figure_text) -------------------


def subplots(
    nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kw: Any
) -> tuple[Figure, Any]:
    """``plt.subplots`` with constrained layout (titles, labels, colour bars and outside legends
    are fitted into the figure)."""
    return plt.subplots(nrows, ncols, figsize=figsize, layout="constrained", **kw)


def legend_right(ax: Axes, fontsize: float = 8, **kw: Any) -> Legend:
    """The axes' legend outside, to the right of the axes (it cannot cover data)."""
    return ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
        fontsize=fontsize,
        frameon=False,
        **kw,
    )


def legend_below(
    fig: Figure,
    handles: Sequence[Artist] | None = None,
    labels: Sequence[str] | None = None,
    fontsize: float = 8,
    ncol: int | None = None,
    **kw: Any,
) -> Legend | None:
    """One legend for the figure, below the axes (constrained layout makes room for it)."""
    if handles is None:
        seen = {}
        for ax in fig.axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(lab, h)
        labels, handles = list(seen), list(seen.values())
    if not handles:
        return None
    return fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=ncol or min(len(handles), 4),
        fontsize=fontsize,
        frameon=False,
        **kw,
    )


def prob_ylim(ax: Axes, values: ArrayLike, *, top_room: float = 0.0) -> None:
    """y from 0: [0, 1] when every value (a probability) lies in it and there is room for
    ``top_room`` above the largest, else from the data."""
    v = np.asarray([x for x in np.ravel(np.asarray(values, dtype=float)) if np.isfinite(x)])
    hi = float(v.max()) if v.size else 1.0
    lo = float(v.min()) if v.size else 0.0
    top = hi + top_room
    bottom = 0.0 if lo >= 0 else lo - 0.05 * (top - lo)
    ax.set_ylim(bottom, 1.0 if top <= 1.0 else top + 0.03 * (top - bottom))


def fmt_num(x: float) -> str:
    """A short number for a label: 3 significant digits, no "-0"."""
    s = f"{x:.3g}"
    return "0" if s in ("-0", "0") else s


# --- measure figures ------------------------------------------------------------------------------


def bos_heatmap(
    result: Any,
    path: str | os.PathLike,
    *,
    data: np.ndarray | None = None,
    label: str = "attention to index 0 (queries T/2..T-1)",
    what: str = "BOS attention",
) -> Path:
    """Layer × head heatmap of mean BOS attention (or ``data [layer, head]``); the band is outlined."""
    data = result.bos_attention.mean(axis=0) if data is None else data  # [layer, head]
    L, H = data.shape
    fig, ax = subplots(figsize=(max(4.8, 0.42 * H + 2.4), max(3.6, 0.3 * L + 1.8)))
    im = ax.imshow(
        data, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="upper"
    )  # a probability: always in [0, 1]
    ax.set_xlabel("head")
    ax.set_ylabel("layer (0-based)")
    ax.set_xticks(range(H))
    ax.set_yticks(range(L))
    ax.tick_params(labelsize=7)
    b0, b1 = result.band
    ax.add_patch(
        plt.Rectangle((-0.5, b0 - 0.5), H, b1 - b0, fill=False, ec="white", lw=1.5, ls="--")
    )
    if H * L <= 400:
        for (i, j), v in np.ndenumerate(data):
            ax.text(
                j,
                i,
                f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=5.5,
                color="white" if v < 0.6 else "black",
            )
    cb = fig.colorbar(im, ax=ax)
    cb.set_label(wrap(label, fig.get_figheight() * 0.8, 8), fontsize=8)
    band_mean = float(np.nanmean(data[b0:b1]))
    title(
        ax,
        f"{result.model}\n{what} per head: mean {band_mean:.2f} over layers {b0}..{b1 - 1} (dashed), {float(np.nanmean(data)):.2f} over all",
    )
    return save_figure(fig, path)


def alpha_heatmap(result: Any, path: str | os.PathLike) -> Path:
    """Gu et al.'s per-head α map: mean attention to index 0 over all queries, averaged over examples."""
    alpha = result.alpha[..., result.keys.index(0)].mean(axis=0)  # [layer, head]
    return bos_heatmap(
        result, path, data=alpha, label="α: attention to index 0, all queries", what="Gu et al.'s α"
    )


def domain_bars(summary: dict, path: str | os.PathLike) -> Path:
    """Band-mean BOS attention per domain with ±2SE bars and the uniform-attention level."""
    block = summary["bos_attention"]
    names = list(block)
    means = np.array([block[n]["mean"] for n in names], dtype=float)
    errs = np.array(
        [2 * block[n]["se"] if np.isfinite(block[n]["se"]) else 0 for n in names], dtype=float
    )
    fig, ax = subplots(figsize=(1.0 * len(names) + 3.6, 3.6))
    colors = ["#444444"] + [f"C{i}" for i in range(len(names) - 1)]
    x = np.arange(len(names))
    ax.bar(x, means, yerr=errs, capsize=4, color=colors)
    ax.set_xticks(x, [wrap(n, 1.0, 9) for n in names])
    u = summary["uniform_baseline"]
    ax.axhline(u, color="red", ls=":", lw=1, label=f"uniform attention ({u:.3f})")
    b0, b1 = summary["layer_band"]
    ax.set_ylabel(f"BOS attention, layers {b0}..{b1 - 1} (±2SE)")
    room = 0.02 * max(1.0, float(np.nanmax(means + errs)))
    prob_ylim(
        ax, np.r_[means + errs, means - errs, u], top_room=6 * room
    )  # room for the numbers above the error bars
    for i, (m, e) in enumerate(zip(means, errs)):
        ax.text(i, m + e + room, f"{m:.3f}", ha="center", va="bottom", fontsize=8)
    legend_right(ax)
    hi = names[int(np.nanargmax(means))]
    lo = names[int(np.nanargmin(means))]
    title(
        ax,
        f"{summary['model']}: BOS attention per dataset (n={summary['n_examples']}), "
        f"from {means.min():.2f} ({lo}) to {means.max():.2f} ({hi}); uniform {u:.3f}",
    )
    return save_figure(fig, path)


def layer_profile(result: Any, summary: dict, path: str | os.PathLike) -> Path:
    """BOS attention per layer, one line per domain, against uniform attention."""
    fig, ax = subplots(figsize=(7.2, 3.6))
    per = summary["bos_attention_per_layer"]
    for i, (dom, vals) in enumerate(per.items()):
        ax.plot(
            range(len(vals)),
            vals,
            marker="o",
            ms=3,
            label=dom,
            color="#444444" if dom == "all" else f"C{i - 1}",
            lw=2 if dom == "all" else 1,
        )
    u = summary["uniform_baseline"]
    ax.axhline(u, color="red", ls=":", lw=1, label=f"uniform ({u:.3f})")
    b0, b1 = summary["layer_band"]
    ax.axvspan(b0 - 0.5, b1 - 0.5, color="grey", alpha=0.12, lw=0, label=f"layers {b0}..{b1 - 1}")
    ax.set_xlabel("layer (0-based)")
    ax.set_ylabel("BOS attention (mean over heads)")
    n = max(len(v) for v in per.values())
    ax.set_xticks(range(n) if n <= 16 else range(0, n, max(1, n // 12)))
    prob_ylim(ax, [x for v in per.values() for x in v] + [u])
    legend_right(ax)
    allv = np.asarray(per.get("all", next(iter(per.values()))), dtype=float)
    title(
        ax,
        f"{result.model}: BOS attention by layer, highest {np.nanmax(allv):.2f} at layer {int(np.nanargmax(allv))}",
    )
    return save_figure(fig, path)


MEASURE_CAPTIONS = {
    "bos_by_layer": "BOS attention per layer and dataset (the shaded band is the one the paper averages).",
    "bos_heatmap": "BOS attention of every head: attention from the second half of each input to index 0, mean over inputs.",
    "bos_by_domain": "BOS attention per dataset over the layer band, mean ± 2SE, with the uniform-attention level.",
    "alpha_heatmap": "Gu et al.'s α: the share of queries' attention on index 0 over all queries, per head.",
}


def measure_figures(result: Any, summary: dict, out: str | os.PathLike) -> dict[str, str]:
    """The four ``measure`` figures in ``out``, in the run's format; returns ``{file name: caption}``."""
    bos_heatmap(result, figure_path(out, "bos_heatmap"))
    alpha_heatmap(result, figure_path(out, "alpha_heatmap"))
    domain_bars(summary, figure_path(out, "bos_by_domain"))
    layer_profile(result, summary, figure_path(out, "bos_by_layer"))
    return {figure_name(stem): caption for stem, caption in MEASURE_CAPTIONS.items()}
