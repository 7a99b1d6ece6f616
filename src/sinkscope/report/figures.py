"""PNG figures for ``measure`` results (matplotlib, Agg backend, written atomically)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io import publish_mode  # noqa: E402


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Save ``fig`` as PNG via a temporary file and ``os.replace``; closes the figure."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        publish_mode(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def bos_heatmap(result, path, *, data=None, label="attention to index 0 (queries T/2..T-1)", what="BOS attention"):
    """Layer × head heatmap of mean BOS attention (or ``data [layer, head]``); the band is outlined."""
    data = result.bos_attention.mean(axis=0) if data is None else data  # [layer, head]
    L, H = data.shape
    fig, ax = plt.subplots(figsize=(max(4.5, 0.42 * H + 2), max(3.5, 0.3 * L + 1.5)))
    im = ax.imshow(data, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="upper")
    ax.set_xlabel("head")
    ax.set_ylabel("layer (0-based)")
    ax.set_xticks(range(H))
    ax.set_yticks(range(L))
    ax.tick_params(labelsize=7)
    b0, b1 = result.band
    ax.add_patch(plt.Rectangle((-0.5, b0 - 0.5), H, b1 - b0, fill=False, ec="white", lw=1.5, ls="--"))
    if H * L <= 400:
        for (i, j), v in np.ndenumerate(data):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=5.5, color="white" if v < 0.6 else "black")
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title(f"{result.model}\n{what} per head (dashed: layers {b0}..{b1 - 1})", fontsize=9)
    return save_figure(fig, path)


def alpha_heatmap(result, path):
    """Gu et al.'s per-head α map: mean attention to index 0 over all queries, averaged over examples."""
    alpha = result.alpha[..., result.keys.index(0)].mean(axis=0)  # [layer, head]
    return bos_heatmap(result, path, data=alpha, label="α: attention to index 0, all queries", what=f"Gu et al. α (Sink rate at ε={result.eps:g}: share above)")


def domain_bars(summary: dict, path):
    """Band-mean BOS attention per domain with ±2SE bars and the uniform-attention level."""
    block = summary["bos_attention"]
    names = list(block)
    means = [block[n]["mean"] for n in names]
    errs = [2 * block[n]["se"] if np.isfinite(block[n]["se"]) else 0 for n in names]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2.5, 3.6))
    colors = ["#444444"] + [f"C{i}" for i in range(len(names) - 1)]
    ax.bar(names, means, yerr=errs, capsize=4, color=colors)
    for i, m in enumerate(means):
        ax.text(i, m + 0.02, f"{m:.3f}", ha="center", fontsize=8)
    u = summary["uniform_baseline"]
    ax.axhline(u, color="red", ls=":", lw=1)
    ax.text(len(names) - 0.5, u, f" uniform {u:.3f}", color="red", fontsize=7, va="bottom", ha="right")
    b0, b1 = summary["layer_band"]
    ax.set_ylabel(f"BOS attention, layers {b0}..{b1 - 1} (±2SE)")
    ax.set_ylim(0, max(1.0, max(means) * 1.15))
    ax.set_title(f"{summary['model']}: sink strength per domain (n={summary['n_examples']})", fontsize=9)
    return save_figure(fig, path)


def layer_profile(result, summary: dict, path):
    """BOS attention per layer, one line per domain, against uniform attention."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, (dom, vals) in enumerate(summary["bos_attention_per_layer"].items()):
        ax.plot(range(len(vals)), vals, marker="o", ms=3, label=dom, color="#444444" if dom == "all" else f"C{i - 1}", lw=2 if dom == "all" else 1)
    ax.axhline(summary["uniform_baseline"], color="red", ls=":", lw=1, label="uniform")
    b0, b1 = summary["layer_band"]
    ax.axvspan(b0 - 0.5, b1 - 0.5, color="grey", alpha=0.12, label="band")
    ax.set_xlabel("layer (0-based)")
    ax.set_ylabel("BOS attention (mean over heads)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"{result.model}: sink by layer", fontsize=9)
    return save_figure(fig, path)


def measure_figures(result, summary: dict, out) -> dict[str, str]:
    """The four ``measure`` figures in ``out``; returns ``{file name: caption}``."""
    out = Path(out)
    bos_heatmap(result, out / "bos_heatmap.png")
    alpha_heatmap(result, out / "alpha_heatmap.png")
    domain_bars(summary, out / "bos_by_domain.png")
    layer_profile(result, summary, out / "bos_by_layer.png")
    return {
        "bos_by_layer.png": "BOS attention per layer and dataset (the shaded band is the one the paper averages).",
        "bos_heatmap.png": "BOS attention of every head: attention from the second half of each input to index 0, mean over inputs.",
        "bos_by_domain.png": "BOS attention per dataset over the layer band, mean ± 2SE, with the uniform-attention level.",
        "alpha_heatmap.png": "Gu et al.'s α: the share of queries' attention on index 0 over all queries, per head.",
    }
