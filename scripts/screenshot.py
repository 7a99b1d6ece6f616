"""The README's screenshot of the report: rebuilds docs/figures/report-screenshot.png.

    python scripts/screenshot.py                  # reproduce offline, then render the report
    python scripts/screenshot.py --out DIR        # ... keeping the run in DIR
    python scripts/screenshot.py --run DIR        # render an existing `sinkscope reproduce` run

Runs ``sinkscope reproduce --quiet --out DIR`` offline (``HF_HUB_OFFLINE=1``: the embedded model
and the offline corpus, as a fresh clone without network gets), checks in headless Chromium that
every figure of ``DIR/report.html`` loaded (the page counts its loaded images into
``<body data-images="k/n">``, as ``tests/test_reproduce.py`` checks), then screenshots the top of
the page at ``--window-size`` into the PNG. Needs Chromium (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PNG = ROOT / "docs" / "figures" / "report-screenshot.png"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("headless Chromium is not installed (Debian: apt-get install chromium)")


def reproduce(out: Path) -> None:
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    cmd = ["sinkscope", "reproduce", "--quiet", "--out", str(out)]
    print("$ HF_HUB_OFFLINE=1 " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"sinkscope reproduce failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    print(r.stdout.strip().splitlines()[-1])


def render(page: Path, png: Path, size: str) -> None:
    flags = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--virtual-time-budget=10000",
        "--run-all-compositor-stages-before-draw",
    ]
    dom = subprocess.run(
        [*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    m = re.search(r'<body[^>]*data-images="(\d+)/(\d+)"', dom)
    if not m or m.group(1) != m.group(2):
        sys.exit(
            f"not every figure of {page} loaded in Chromium ({m.group(0) if m else 'no count'})"
        )
    print(f"Chromium: {m.group(1)} of {m.group(2)} figures loaded")
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.stem}.{os.getpid()}.png")
    try:
        subprocess.run(
            [*flags, f"--window-size={size}", f"--screenshot={tmp}", page.as_uri()],
            capture_output=True,
            timeout=120,
            check=True,
        )
        os.replace(tmp, png)  # the old screenshot stays until the new one is whole
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {png} ({size})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--run", type=Path, help="an existing reproduce run to render (default: run one)"
    )
    ap.add_argument(
        "--out", type=Path, help="where the new run goes, kept (default: a temporary one)"
    )
    ap.add_argument(
        "--png", type=Path, default=PNG, help=f"where to write (default {PNG.relative_to(ROOT)})"
    )
    ap.add_argument("--window-size", default="1200,1600", help="WIDTH,HEIGHT in pixels")
    a = ap.parse_args()
    if a.run is not None:
        render(a.run / "report.html", a.png, a.window_size)
        return
    if a.out is not None:
        reproduce(a.out)
        render(a.out / "report.html", a.png, a.window_size)
        return
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "reproduce"
        reproduce(out)
        render(out / "report.html", a.png, a.window_size)


if __name__ == "__main__":
    main()
