"""Every figure the README quotes (times, memory, test counts), measured afresh.

    python benchmarks/readme_figures.py                 # print the figures
    python benchmarks/readme_figures.py --write-readme  # ... and put them into README.md
    python benchmarks/readme_figures.py --only help,tests

Each command runs as a user types it, offline (``HF_HUB_OFFLINE=1``), in an empty temporary
directory, in a fresh child process: wall time by ``time.perf_counter`` around it, peak memory
the largest resident set (``ru_maxrss``) among its processes, read with
``resource.getrusage(RUSAGE_CHILDREN)`` in a small wrapper process of its own (so one
measurement's peak never leaks into the next). Test counts are ``pytest --collect-only -q``.

One line per figure, ``KEY: VALUE``. The README quotes each line verbatim as inline code
(`` `sinkscope measure: 30 s wall, 0.55 GB peak memory` ``), so ``--write-readme`` replaces
every quoted line by its new value and says which ones it changed. The first line names the
machine and its load: on a machine shared with other jobs the times are upper bounds.
"""

from __future__ import annotations

import os
import sys

# benchmarks/profile.py shadows the stdlib `profile`: keep this folder off the path
sys.path[:] = [
    p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))
]

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# runs argv in a child, then prints its wall time and the children's peak RSS as JSON
WRAPPER = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
peak *= 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
print(json.dumps({"rc": rc.returncode, "wall": wall, "peak": peak, "stderr": rc.stderr[-2000:]}))
"""


def _env() -> dict:
    bindir = str(Path(sys.executable).parent)  # the venv's `sinkscope` first
    return dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTEST_ADDOPTS="-p no:cacheprovider",
    )


def timed(argv: list[str], cwd: Path) -> dict:
    """``argv`` in ``cwd``: ``{"wall": s, "peak": bytes}``; a failure stops the script."""
    r = subprocess.run(
        [sys.executable, "-c", WRAPPER, *argv],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if res["rc"] != 0:
        sys.exit(f"`{' '.join(argv)}` failed (exit {res['rc']}):\n{res['stderr']}")
    return res


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"


def _gb(b: float) -> str:
    return f"{b / 1e9:.2f} GB"


def fig_help(repeat: int) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as d:
        walls = [timed(["sinkscope", "--help"], Path(d))["wall"] for _ in range(repeat)]
    return {"sinkscope --help": f"{statistics.median(walls):.2f} s wall (median of {repeat})"}


def fig_measure(repeat: int) -> dict[str, str]:
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as d:
            runs.append(timed(["sinkscope", "measure", "--quiet"], Path(d)))
    best = min(runs, key=lambda r: r["wall"])
    return {"sinkscope measure": f"{_seconds(best['wall'])} wall, {_gb(best['peak'])} peak memory"}


def fig_reproduce(repeat: int) -> dict[str, str]:
    cold, cached = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as d:
            cold.append(timed(["sinkscope", "reproduce", "--quiet"], Path(d)))
            cached.append(
                timed(["sinkscope", "reproduce", "--quiet"], Path(d))
            )  # every stage reused
    c = min(cold, key=lambda r: r["wall"])
    w = min(cached, key=lambda r: r["wall"])
    return {
        "sinkscope reproduce": f"{_seconds(c['wall'])} wall, {_gb(c['peak'])} peak memory",
        "sinkscope reproduce, rerun with every stage cached": f"{_seconds(w['wall'])} wall",
    }


def _collected(marker: str | None) -> int:
    argv = [sys.executable, "-m", "pytest", "--collect-only", "-q"]
    argv += ["-m", marker] if marker else []
    r = subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True, text=True)
    m = re.search(r"^(\d+)(?:/\d+)? tests? collected", r.stdout, re.M)
    if not m:
        sys.exit(f"`{' '.join(argv[1:])}` collected nothing:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return int(m.group(1))


def fig_tests() -> dict[str, str]:
    return {
        "pytest": f"{_collected(None)} tests",
        "pytest -m slow": f"{_collected('slow')} tests",
        "pytest -m long": f"{_collected('long')} tests",
    }


def machine() -> dict[str, str]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"machine": f"{os.cpu_count()} CPU cores, load average {load:.1f} at the start"}


# every line the script prints, by key: the README quotes each one (tests/test_readme.py checks)
KEYS = (
    "machine",
    "sinkscope --help",
    "sinkscope measure",
    "sinkscope reproduce",
    "sinkscope reproduce, rerun with every stage cached",
    "pytest",
    "pytest -m slow",
    "pytest -m long",
)

FIGURES = {
    "help": lambda a: fig_help(a.repeat_help),
    "measure": lambda a: fig_measure(a.repeat),
    "reproduce": lambda a: fig_reproduce(a.repeat),
    "tests": lambda a: fig_tests(),
}


def write_readme(lines: dict[str, str], path: Path = README) -> list[str]:
    """Replace every `` `KEY: ...` `` quoted in ``path`` by `` `KEY: VALUE` ``; the changed keys."""
    text = path.read_text()
    changed = []
    for key, value in lines.items():
        pattern = re.compile(r"`" + re.escape(key) + r": [^`]*`")
        new, n = pattern.subn(lambda _m: f"`{key}: {value}`", text)
        changed += [key] if n and new != text else []
        text = new
    path.write_text(text)
    return changed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(FIGURES), help=f"subset of {','.join(FIGURES)}")
    ap.add_argument(
        "--repeat", type=int, default=1, help="runs of measure / reproduce (the fastest counts)"
    )
    ap.add_argument("--repeat-help", type=int, default=5, help="runs of --help (the median counts)")
    ap.add_argument("--write-readme", action="store_true", help="put the figures into README.md")
    a = ap.parse_args()
    wanted = [k.strip() for k in a.only.split(",") if k.strip()]
    unknown = sorted(set(wanted) - set(FIGURES))
    if unknown:
        ap.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    lines = machine()
    print(f"machine: {lines['machine']}", flush=True)
    for name in wanted:
        for key, value in FIGURES[name](a).items():
            lines[key] = value
            print(f"{key}: {value}", flush=True)
    assert set(lines) <= set(KEYS), f"figures the README does not quote: {set(lines) - set(KEYS)}"
    if a.write_readme:
        changed = write_readme(lines)
        print(
            f"README.md: {len(changed)} figure(s) changed"
            + (f" ({', '.join(changed)})" if changed else "")
        )


if __name__ == "__main__":
    main()
