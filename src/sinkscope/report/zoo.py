"""Zoo figures: sink strength per variant and domain, sink vs loss, sink during training."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import plt, save_figure


def zoo_bars(result, path):
    """BOS attention per variant (bars: mean over seeds; dots: seeds), one colour per domain."""
    r = result.runs
    variants = list(dict.fromkeys(r.variant))
    domains = ["all"] + [d for d in dict.fromkeys(r.domain) if d != "all"]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(variants) + 2), 4))
    w = 0.8 / len(domains)
    for j, dom in enumerate(domains):
        sub = r[r.domain == dom]
        means = [sub[sub.variant == v].bos_attention.mean() for v in variants]
        x = np.arange(len(variants)) + (j - (len(domains) - 1) / 2) * w
        ax.bar(x, means, w, label=dom, alpha=0.85)
        for xi, v in zip(x, variants):
            pts = sub[sub.variant == v].bos_attention.to_numpy()
            ax.scatter(np.full(len(pts), xi), pts, s=8, color="black", zorder=3)
    ax.axhline(0.3, color="grey", ls="--", lw=1)
    ax.text(len(variants) - 0.5, 0.31, "0.3: sink formed", ha="right", fontsize=7, color="grey")
    ax.set_xticks(range(len(variants)), variants, rotation=20)
    ax.set_ylabel("attention to index 0 (layer band, T=40)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=len(domains))
    ax.set_title("Which switched-off component stops the sink? (dots: seeds)", fontsize=9)
    return save_figure(fig, path)


def zoo_scatter(result, path):
    """Final validation loss vs sink strength, one point per run."""
    r = result.runs[result.runs.domain == "all"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for v in dict.fromkeys(r.variant):
        s = r[r.variant == v]
        ax.scatter(s.bos_attention, s.val_loss, label=v, s=30)
    ax.set_xlabel("attention to index 0 (layer band)")
    ax.set_ylabel("validation loss (nats/token)")
    ax.legend(fontsize=7)
    ax.set_title("Sink strength vs loss, per run", fontsize=9)
    return save_figure(fig, path)


def zoo_curves(curves: dict[str, list[dict]], path):
    """The live sink readout during training, one line per run."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    cmap = plt.get_cmap("tab10")
    names = list(dict.fromkeys(n.rsplit("-s", 1)[0] for n in curves))
    for name, evals in curves.items():
        if not evals:
            continue
        v = name.rsplit("-s", 1)[0]
        ax.plot([e["step"] for e in evals], [e["sink"] for e in evals], color=cmap(names.index(v) % 10), label=v if name.endswith("-s0") or v not in ax.get_legend_handles_labels()[1] else None, lw=1.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("attention to index 0 (layer band, T=40)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("Sink emergence during training", fontsize=9)
    return save_figure(fig, path)


def zoo_figures(result, out: Path) -> list[Path]:
    from ..experiments.zoo import load_training_curves

    return [zoo_bars(result, out / "zoo_sink.png"), zoo_scatter(result, out / "zoo_loss_vs_sink.png"), zoo_curves(load_training_curves(out), out / "zoo_training.png")]
