"""Text that fits its figure: wrapping to a width in inches (:func:`wrap`, :func:`fill`), axes and
figure titles that remember their text (:func:`title`, :func:`suptitle`), and :func:`fit_titles`,
which re-wraps titles, axis labels and categorical tick labels to the width they have after
layout. Part of the layout rules of :mod:`sinkscope.report.figures`, which re-exports every name."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def wrap(text: str, width_in: float, fontsize: float = 9) -> str:
    """``text`` wrapped to lines that fit ``width_in`` inches at ``fontsize`` points (existing
    line breaks kept; a word longer than a line, e.g. a path, is broken, never cut)."""
    return fill(str(text), max(12, int(width_in * 72 / (fontsize * 0.56))))


_CHUNK = re.compile(r"\s+|[^\s/-]*[/-]+|[^\s/-]+")


def fill(text: str, chars: int) -> str:
    """Greedy wrap of every line of ``text`` to ``chars`` characters, breaking at spaces and after
    ``/`` and ``-`` (model names, paths), a longer run of letters only where it must. No
    character is dropped except the spaces at line breaks.

    >>> fill("org/some-model-name-1.5B", 10)
    'org/some-\\nmodel-\\nname-1.5B'
    """
    out = []
    for line in text.split("\n"):
        lines, cur = [], ""
        for tok in _CHUNK.findall(line):
            if tok.isspace():
                cur += " " if cur else ""
                continue
            while tok:
                if len(cur) + len(tok) <= chars:
                    cur, tok = cur + tok, ""
                elif cur.strip():
                    lines.append(cur.rstrip())
                    cur = ""
                else:  # a run longer than a line: break it
                    lines.append(tok[:chars])
                    tok = tok[chars:]
        if cur.strip():
            lines.append(cur.rstrip())
        out.append("\n".join(lines) if lines else line)
    return "\n".join(out)


def axes_width(ax: Axes) -> float:
    """About the width of ``ax`` in inches after layout: its share of the grid (width ratios
    included) of the figure, less room for the y-axis labels."""
    spec = ax.get_subplotspec()
    if spec is None:
        return ax.get_position().width * ax.figure.get_figwidth()
    ratios = np.asarray(
        spec.get_gridspec().get_width_ratios() or [1] * spec.get_gridspec().ncols, dtype=float
    )
    share = ratios[spec.colspan.start : spec.colspan.stop].sum() / ratios.sum()
    return max(share * ax.figure.get_figwidth() - 0.7, 1.5)


def title(ax: Axes, text: str, fontsize: float = 9) -> None:
    """An axes title wrapped to the axes' width (refitted to the laid-out width on saving)."""
    t = ax.set_title(wrap(text, axes_width(ax), fontsize), fontsize=fontsize)
    t._sinkscope_text = text


def suptitle(fig: Figure, text: str, fontsize: float = 10) -> None:
    """A figure title wrapped to the figure's width (refitted on saving)."""
    t = fig.suptitle(wrap(text, fig.get_figwidth() * 0.95, fontsize), fontsize=fontsize)
    t._sinkscope_text = text


def _rewrap(t, avail: float, r) -> bool:
    """Wrap the text ``t`` (set through :func:`title` / :func:`suptitle` / :func:`wrap`) to fit
    ``avail`` pixels; True if it changed."""
    w = t.get_window_extent(r).width
    if not t.get_text() or w <= avail:
        return False
    src = getattr(t, "_sinkscope_text", t.get_text())
    longest = max(len(line) for line in t.get_text().split("\n"))
    chars = max(8, int(longest * avail / w * 0.96))
    new = fill(str(src), chars)
    if new == t.get_text():
        return False
    t.set_text(new)
    return True


def _fit_ticklabels(ax, r) -> bool:
    """Re-wrap fixed (categorical) x tick labels wider than the distance between their ticks."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, FuncFormatter

    if not isinstance(ax.xaxis.get_major_locator(), FixedLocator) or not isinstance(
        ax.xaxis.get_major_formatter(), (FixedFormatter, FuncFormatter)
    ):
        return False
    locs = np.asarray(ax.get_xticks(), dtype=float)
    labels = ax.get_xticklabels()
    if len(locs) < 2 or len(labels) != len(locs):
        return False
    px = ax.transData.transform(np.c_[locs, np.zeros_like(locs)])[:, 0]
    gap = float(np.min(np.diff(np.sort(px)))) * 0.92
    widths = [t.get_window_extent(r).width for t in labels]
    w = max(widths)
    if w <= gap or gap <= 0:
        return False
    texts = [t.get_text() for t in labels]
    longest = max(len(line) for t in texts for line in t.split("\n"))
    chars = max(4, int(longest * gap / w))
    new = [fill(t, chars) for t in texts]
    if new == texts:
        return False
    ax.set_xticks(locs, new, fontsize=labels[0].get_fontsize())
    return True


def fit_titles(fig: Figure, rounds: int = 3) -> None:
    """After layout, re-wrap every axes title wider than its axes (and a figure title wider than
    the figure) to the width it has, then lay out again: wrapping before layout can only guess
    the width that legends, colour bars and labels leave."""
    for _ in range(rounds):
        fig.draw_without_rendering()
        r = fig.canvas.get_renderer()
        changed = False
        for ax in fig.axes:
            if not ax.axison and not ax.get_title():
                continue
            width = ax.get_window_extent(r).width
            changed |= _rewrap(ax.title, width, r)
            if ax.axison:
                changed |= _rewrap(ax.xaxis.label, width, r)
                changed |= _rewrap(ax.yaxis.label, ax.get_window_extent(r).height, r)
                changed |= _fit_ticklabels(ax, r)
        if fig._suptitle is not None:
            changed |= _rewrap(fig._suptitle, fig.bbox.width * 0.98, r)
        if fig._supxlabel is not None:
            changed |= _rewrap(fig._supxlabel, fig.bbox.width * 0.98, r)
        if not changed:
            return
