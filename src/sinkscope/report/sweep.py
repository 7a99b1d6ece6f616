"""Figures and the HTML page of ``sinkscope sweep``: sink vs length, per content regime, vs
training step, and the cross-model Table 1 (they read the sweep's table, never recompute)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .figures import legend_right, plt, prob_ylim, save_figure, subplots, title, wrap
from .formats import figure_name

if TYPE_CHECKING:
    import os
    from typing import Any


def _baseline(frame):
    """The baseline rows over all inputs (intervention ``a``, domain ``all``)."""
    return frame[(frame.intervention == "a") & (frame.domain == "all") & frame.applicable]


def _seed_stats(sub, by):
    g = sub.groupby(by, sort=False).bos_attention
    return g.mean(), g.std(ddof=1)


def sink_vs_length(result: Any, path: str | os.PathLike) -> Path:
    """Baseline BOS attention (band, all inputs) against length, one line per model × regime,
    error bars: cross-seed SD."""
    b = _baseline(result.frame)
    fig, ax = subplots(figsize=(7.4, 4))
    cmap = plt.get_cmap("tab10")
    styles = {"natural": "-", "random": "--", "repeated": ":"}
    for i, m in enumerate(dict.fromkeys(b.model)):
        for c in dict.fromkeys(b.content):
            sub = b[(b.model == m) & (b.content == c)]
            if sub.empty:
                continue
            mean, sd = _seed_stats(sub, "length")
            ax.errorbar(
                mean.index,
                mean.to_numpy(),
                yerr=np.nan_to_num(sd.to_numpy()),
                color=cmap(i % 10),
                ls=styles.get(c, "-"),
                marker="o",
                ms=4,
                capsize=3,
                label=f"{m}, {c}",
            )
    ax.set_xscale("log", base=2)
    lengths = sorted(set(b.length))
    ax.set_xticks(lengths, [str(t) for t in lengths])
    ax.set_xlabel("input length (tokens)")
    ax.set_ylabel("attention to index 0 (layer band)")
    prob_ylim(ax, b.bos_attention.to_numpy(dtype=float))
    legend_right(ax, fontsize=7)
    ends = b.groupby(["model", "content"], sort=False).apply(
        lambda s: (
            s[s.length == s.length.min()].bos_attention.mean(),
            s[s.length == s.length.max()].bos_attention.mean(),
        )
    )
    lo, hi = min(lengths), max(lengths)
    desc = "; ".join(f"{m} {c}: {a:.3f} → {z:.3f}" for (m, c), (a, z) in list(ends.items())[:3])
    title(ax, f"Sink vs length ({lo} → {hi} tokens): {desc}")
    return save_figure(fig, path)


def sink_by_content(result: Any, path: str | os.PathLike) -> Path:
    """Baseline BOS attention per content regime, one bar group per model (first length)."""
    length, _ = result.table1_setting()
    b = _baseline(result.frame)
    b = b[b.length == length]
    models, contents = list(dict.fromkeys(b.model)), list(dict.fromkeys(b.content))
    fig, ax = subplots(figsize=(max(6, 1.6 * len(models) + 3), 4))
    w = 0.8 / max(1, len(contents))
    for j, c in enumerate(contents):
        mean = [b[(b.model == m) & (b.content == c)].bos_attention.mean() for m in models]
        x = np.arange(len(models)) + (j - (len(contents) - 1) / 2) * w
        ax.bar(x, mean, w, label=c, alpha=0.85)
        for xi, m in zip(x, models):
            pts = b[(b.model == m) & (b.content == c)].bos_attention.to_numpy()
            ax.scatter(
                np.full(len(pts), xi),
                pts,
                s=8,
                color="black",
                zorder=3,
                label="one seed" if j == 0 and xi == x[0] else None,
            )
    ax.set_xticks(range(len(models)), [wrap(m, 1.4, 8) for m in models], fontsize=8)
    ax.set_ylabel(f"attention to index 0 (band, {length} tokens)")
    prob_ylim(ax, b.bos_attention.to_numpy(dtype=float))
    legend_right(ax, fontsize=7)
    title(ax, f"Sink per content regime at {length} tokens (bars: mean over seeds; dots: seeds)")
    return save_figure(fig, path)


def table1_heatmap(result: Any, path: str | os.PathLike) -> Path:
    """% of the baseline sink left under each intervention, model × intervention (all inputs)."""
    t = result.table1()
    t = t[t.domain == "all"]
    models, ivs = (
        list(dict.fromkeys(t.model)),
        sorted(dict.fromkeys(t.intervention), key=result.intervention_order),
    )
    grid = np.full((len(models), len(ivs)), np.nan)
    for _, r in t.iterrows():
        grid[models.index(r.model), ivs.index(r.intervention)] = r.pct_baseline
    fig, ax = subplots(figsize=(max(6, 0.7 * len(ivs) + 3), 0.5 * len(models) + 2))
    im = ax.imshow(grid, cmap="RdBu", vmin=0, vmax=200, aspect="auto")
    for i in range(len(models)):
        for j in range(len(ivs)):
            ax.text(
                j,
                i,
                "n/a" if np.isnan(grid[i, j]) else f"{grid[i, j]:.0f}",
                ha="center",
                va="center",
                fontsize=7,
            )
    ax.set_xticks(range(len(ivs)), ivs)
    ax.set_yticks(range(len(models)), [wrap(m, 2.0, 8) for m in models], fontsize=8)
    fig.colorbar(im, ax=ax, label="% of baseline sink")
    length, content = result.table1_setting()
    title(
        ax,
        f"Table 1 across models: % of the baseline sink left per intervention ({content}, {length} tokens, mean over seeds)",
    )
    return save_figure(fig, path)


def sink_vs_step(result: Any, path: str | os.PathLike) -> Path:
    """Baseline BOS attention against training step (checkpoints), per content regime."""
    b = _baseline(result.frame).dropna(subset=["step"])
    length, _ = result.table1_setting()
    b = b[b.length == length]
    fig, ax = subplots(figsize=(7, 4))
    for c in dict.fromkeys(b.content):
        mean, sd = _seed_stats(b[b.content == c], "step")
        ax.errorbar(
            mean.index,
            mean.to_numpy(),
            yerr=np.nan_to_num(sd.to_numpy()),
            marker="o",
            ms=4,
            capsize=3,
            label=c,
        )
    ax.set_xlabel("training step")
    ax.set_ylabel("attention to index 0 (layer band)")
    prob_ylim(ax, b.bos_attention.to_numpy(dtype=float))
    legend_right(ax, fontsize=7)
    s = b.sort_values("step")
    title(
        ax,
        f"Sink over training: {s.bos_attention.iloc[0]:.3f} at step {int(s.step.iloc[0])} → "
        f"{s.bos_attention.iloc[-1]:.3f} at step {int(s.step.iloc[-1])}"
        if len(s)
        else "Sink over training",
    )
    return save_figure(fig, path)


def sweep_figures(result: Any, out: Path) -> dict[str, str]:
    """The figures the sweep's grid supports: ``{file name: caption}``."""
    f, figs = result.frame, {}

    def add(name, draw, caption):
        draw(result, out / figure_name(name))
        figs[figure_name(name)] = caption

    if f.length.nunique() > 1:
        add(
            "sink_vs_length",
            sink_vs_length,
            "Baseline BOS attention (layer band, all inputs) against input length; "
            "error bars: SD across seeds.",
        )
    if f.content.nunique() > 1:
        add(
            "sink_by_content",
            sink_by_content,
            "Baseline BOS attention per content regime (natural text, uniform random "
            "tokens, a random sequence repeated).",
        )
    if (f.intervention != "a").any():
        add(
            "table1_models",
            table1_heatmap,
            "The cross-model Table 1: % of each model's baseline sink left under each "
            "intervention (n/a: not applicable).",
        )
    if f.step.notna().any() and f.step.nunique() > 1:
        add(
            "sink_vs_step",
            sink_vs_step,
            "Baseline BOS attention against training step, one point per checkpoint.",
        )
    return figs


def sweep_section(result: Any, out: Path, figs: dict[str, str]) -> str:
    """The sweep's section of an HTML page: the grid, Table 1 across models, the figures."""
    from .html import _e, _img, _table

    cfg = result.config
    t = result.table1()
    shown = t.assign(
        mean=t["mean"].map(lambda x: f"{x:.4f}"),
        sd_seeds=t.sd_seeds.map(lambda x: "" if np.isnan(x) else f"{x:.4f}"),
        pct_baseline=t.pct_baseline.map(lambda x: "n/a" if np.isnan(x) else f"{x:.1f}%"),
    )
    length, content = result.table1_setting()
    parts = [
        "<h2>Sweep</h2>",
        f'<p class="sub">{len(cfg.models)} model(s) × lengths {", ".join(map(str, cfg.lengths))} × content {", ".join(cfg.contents)} '
        f"× seeds {', '.join(map(str, cfg.seeds))}: {_e(result.cells_text())} in this run; preset {_e(cfg.preset)}, inputs <code>{_e(cfg.inputs)}</code>.</p>",
        f"<h3>Table 1 across models ({_e(content)} text, {length} tokens)</h3>",
        _table(shown),
    ]
    if result.failed:
        parts.append(
            '<div class="note">Failed cells: '
            + "; ".join(f"{_e(k)}: {_e(v)}" for k, v in result.failed.items())
            + "</div>"
        )
    for name, caption in figs.items():
        parts.append(
            f"<figure>{_img(out / name, caption)}<figcaption>{_e(caption)}</figcaption></figure>"
        )
    return "\n".join(parts)


def write_sweep_report(result: Any, out: Path, figs: dict[str, str]) -> Path:
    """``report.html``: the sweep section on a self-contained page (figures embedded)."""
    from ..io import write_text_atomic
    from .html import CSS, SCRIPT

    body = sweep_section(result, out, figs)
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>sinkscope sweep</title><style>{CSS}</style>'
        f"<script>{SCRIPT}</script></head><body><h1>sinkscope sweep</h1>{body}"
        f'<p class="status" id="image-check"></p></body></html>'
    )
    write_text_atomic(out / "report.html", page)
    return out / "report.html"
