"""The figure file format of a run (``--format png|svg|pdf``): one setting, chosen once by the
caller, read by every function that names or writes a figure. Free of matplotlib and torch, so the
CLI can import it.

The caller sets it around the whole command; figure names carry it::

    with figure_format("svg"):
        res.write(out)          # writes bos_heatmap.svg, ..., and returns {"bos_heatmap.svg": caption, ...}

:func:`~sinkscope.report.figures.save_figure` writes the format its path's suffix names, so a
name from :func:`figure_name` / :func:`figure_path` is written in the run's format. A PDF figure
gets a PNG preview beside it (same stem, ``.png``): the HTML report embeds that, since a browser
cannot show a PDF inline in an ``<img>``.

>>> current_format()
'png'
>>> with figure_format("SVG"):
...     figure_name("bos_heatmap"), current_format()
('bos_heatmap.svg', 'svg')
>>> figure_name("bos_heatmap")
'bos_heatmap.png'
>>> preview_name("fig1.pdf"), preview_name("fig1.svg")
('fig1.png', 'fig1.svg')
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SinkscopeError

if TYPE_CHECKING:
    from typing import Iterator

FIGURE_FORMATS = ("png", "svg", "pdf")
DEFAULT_FORMAT = "png"

_FORMAT: contextvars.ContextVar[str] = contextvars.ContextVar(
    "sinkscope_figure_format", default=DEFAULT_FORMAT
)


def check_format(fmt: str) -> str:
    """``fmt`` lower-cased, or a :class:`SinkscopeError` naming the choices."""
    f = str(fmt).lower().lstrip(".")
    if f not in FIGURE_FORMATS:
        raise SinkscopeError(f"--format {fmt}: choose one of {', '.join(FIGURE_FORMATS)}")
    return f


@contextlib.contextmanager
def figure_format(fmt: str | None) -> Iterator[str]:
    """Within the block, figures are named and written as ``fmt`` (None: leave the current one)."""
    if fmt is None:
        yield current_format()
        return
    token = _FORMAT.set(check_format(fmt))
    try:
        yield _FORMAT.get()
    finally:
        _FORMAT.reset(token)


def current_format() -> str:
    """The format figures are written in now (``png`` unless a caller chose another)."""
    return _FORMAT.get()


def figure_name(stem: str) -> str:
    """``stem`` with the current format's suffix: the file name a figure is written and listed under."""
    return f"{stem}.{current_format()}"


def figure_path(out: str | os.PathLike, stem: str) -> Path:
    """``out / figure_name(stem)``."""
    return Path(out) / figure_name(stem)


def preview_name(name: str) -> str:
    """The raster image a page can show for the figure file ``name``: the PNG preview that
    :func:`~sinkscope.report.figures.save_figure` writes beside a PDF, else ``name`` itself."""
    p = Path(name)
    return p.with_suffix(".png").name if p.suffix.lower() == ".pdf" else p.name
