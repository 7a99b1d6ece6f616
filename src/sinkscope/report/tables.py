"""HTML pieces shared by the report and the stages' report sections: escaping, tables,
numbers, embedded figures.

>>> import pandas as pd
>>> html_table(pd.DataFrame({"a": [1]}))
'<table class="tbl"><thead><tr><th>a</th></tr></thead><tbody><tr><td class="n">1</td></tr></tbody></table>'
>>> fmt(float("nan")), fmt(0.5)
('n/a', '0.500')
>>> fmt(-0.0004, "+.3f"), fmt(-0.4, ".0f"), fmt(-0.5, "+.1f"), plural(1, "massive coordinate")
('+0.000', '0', '-0.5', '1 massive coordinate')
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Callable

    import pandas as pd

SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; else imgs[i].setAttribute("data-broken", "1"); }
  document.body.setAttribute("data-images", ok + "/" + imgs.length);
  var el = document.getElementById("image-check");
  if (el) el.textContent = ok + " of " + imgs.length + " figures loaded";
});
"""


def esc(x: object) -> str:
    return html.escape(str(x))


_MIME = {".png": "image/png", ".svg": "image/svg+xml"}


def _img(path: Path, alt: str, href: str | None = None) -> str:
    """The figure file ``path`` as an inline image: PNG and SVG as data URIs; a PDF through the
    PNG preview written beside it (``report.formats.preview_name``), with a link to the PDF
    (``href``, relative to the page) under it; a PDF without a preview is a link only."""
    from .formats import preview_name

    shown = path.with_name(preview_name(path.name))
    link = (
        f'<a class="pdf" href="{esc(href or path.name)}">{esc(path.name)} (PDF)</a>'
        if path.suffix.lower() == ".pdf"
        else ""
    )
    if not shown.exists() or shown.suffix.lower() not in _MIME:
        return link
    data = base64.b64encode(shown.read_bytes()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:{_MIME[shown.suffix.lower()]};base64,{data}">' + link


_NUM = re.compile(r"^[+\-−]?[\d.,]+(e[+\-]?\d+)?%?( ± [\d.,]+)?( \([\d.,]+%?\))?$")


def html_table(df: pd.DataFrame, row_class: Callable[[pd.Series], str] | None = None) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        cls = f' class="{row_class(r)}"' if row_class else ""
        rows.append(
            f"<tr{cls}>"
            + "".join(
                f'<td class="n">{esc(v)}</td>' if _NUM.match(str(v)) else f"<td>{esc(v)}</td>"
                for v in r.to_numpy()
            )
            + "</tr>"
        )
    return (
        f'<table class="tbl"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def fmt(x: object, spec: str = ".3f", na: str = "n/a") -> str:
    """``format(x, spec)`` as the report prints numbers: ``na`` for None / NaN, and never a
    negative zero (a value that rounds to 0 prints as ``0`` / ``+0.000``, not ``-0``)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return na
    s = format(x, spec)
    if s.startswith("-") and not any(ch in "123456789" for ch in s.split("e")[0]):
        s = ("+" if "+" in spec else "") + s[1:]
    return s


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 coordinate"``, ``"3 coordinates"`` (``many``: the plural when it is not word + s)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


_e, _table, _f = esc, html_table, fmt  # the short names the report modules use
