"""Zoo figures: sink strength per variant and domain, sink vs loss, sink during training (layout
rules: :mod:`sinkscope.report.figures`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .figures import legend_right, plt, prob_ylim, save_figure, subplots, title, wrap
from .formats import figure_path

if TYPE_CHECKING:
    import os
    from typing import Any

SINK_FORMED = 0.3  # the zoo's "sink formed" level


def zoo_bars(result: Any, path: str | os.PathLike) -> Path:
    """BOS attention per variant (bars: mean over seeds; dots: seeds), one colour per domain."""
    r = result.runs
    variants = list(dict.fromkeys(r.variant))
    domains = ["all"] + [d for d in dict.fromkeys(r.domain) if d != "all"]
    fig, ax = subplots(figsize=(max(6.5, 1.1 * len(variants) + 3.5), 4))
    w = 0.8 / len(domains)
    for j, dom in enumerate(domains):
        sub = r[r.domain == dom]
        means = [sub[sub.variant == v].bos_attention.mean() for v in variants]
        x = np.arange(len(variants)) + (j - (len(domains) - 1) / 2) * w
        ax.bar(x, means, w, label=dom, alpha=0.85)
        for xi, v in zip(x, variants):
            pts = sub[sub.variant == v].bos_attention.to_numpy()
            ax.scatter(
                np.full(len(pts), xi),
                pts,
                s=8,
                color="black",
                zorder=3,
                label="one seed" if j == 0 and xi == x[0] else None,
            )
    ax.axhline(SINK_FORMED, color="grey", ls="--", lw=1, label=f"{SINK_FORMED:g}: sink formed")
    ax.set_xticks(range(len(variants)), [wrap(v, 1.0, 8) for v in variants], fontsize=8)
    ax.set_ylabel("attention to index 0 (layer band, T=40)")
    prob_ylim(ax, np.r_[r.bos_attention.to_numpy(dtype=float), SINK_FORMED])
    legend_right(ax, fontsize=7)
    a = r[r.domain == "all"].groupby("variant", sort=False).bos_attention.mean()
    formed = [v for v in a.index if a[v] >= SINK_FORMED]
    title(
        ax,
        f"BOS attention per variant (mean over seeds, all inputs): {len(formed)} of {len(a)} variants reach {SINK_FORMED:g}"
        + (f"; lowest {a.min():.2f} ({a.idxmin()})" if len(a) else ""),
    )
    return save_figure(fig, path)


def zoo_scatter(result: Any, path: str | os.PathLike) -> Path:
    """Final validation loss vs sink strength, one point per run."""
    r = result.runs[result.runs.domain == "all"]
    fig, ax = subplots(figsize=(6.8, 4))
    for v in dict.fromkeys(r.variant):
        s = r[r.variant == v]
        ax.scatter(s.bos_attention, s.val_loss, label=v, s=30)
    ax.set_xlabel("attention to index 0 (layer band)")
    ax.set_ylabel("validation loss (nats/token)")
    legend_right(ax, fontsize=7)
    title(ax, f"Validation loss vs BOS attention, one point per run ({len(r)} runs)")
    return save_figure(fig, path)


def zoo_curves(curves: dict[str, list[dict]], path: str | os.PathLike) -> Path:
    """The live sink readout during training, one line per run."""
    fig, ax = subplots(figsize=(7.6, 4))
    cmap = plt.get_cmap("tab10")
    names = list(dict.fromkeys(n.rsplit("-s", 1)[0] for n in curves))
    allv = []
    for name, evals in curves.items():
        if not evals:
            continue
        v = name.rsplit("-s", 1)[0]
        allv += [e["sink"] for e in evals]
        ax.plot(
            [e["step"] for e in evals],
            [e["sink"] for e in evals],
            color=cmap(names.index(v) % 10),
            label=v if v not in ax.get_legend_handles_labels()[1] else None,
            lw=1.2,
        )
    ax.set_xlabel("training step")
    ax.set_ylabel("attention to index 0 (layer band, T=40)")
    prob_ylim(ax, allv or [0.0])
    if allv:
        legend_right(ax, fontsize=7)
    title(
        ax,
        f"BOS attention during training, one line per run ({sum(bool(e) for e in curves.values())} runs)",
    )
    return save_figure(fig, path)


def zoo_figures(result: Any, out: Path) -> list[Path]:
    """The three zoo figures in ``out``, in the run's format."""

    return [
        zoo_bars(result, figure_path(out, "zoo_sink")),
        zoo_scatter(result, figure_path(out, "zoo_loss_vs_sink")),
        zoo_curves(load_training_curves(out), figure_path(out, "zoo_training")),
    ]


def load_training_curves(out: Path) -> dict[str, list[dict]]:
    """``{run name: evals}`` from every run's ``training.json`` under a zoo directory."""
    curves = {}
    for f in sorted(Path(out).glob("*-s*/training.json")):
        curves[f.parent.name] = json.loads(f.read_text())["evals"]
    return curves
