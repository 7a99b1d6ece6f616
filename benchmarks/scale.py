"""The scale table of docs/scale.md: Qwen2.5-Coder 0.5B vs 1.5B (the packaged GGUFs), each in
float32 and bfloat16, through ``sinkscope measure``, ``sinkscope intervene --preset paper`` and
``sinkscope compare``, one command at a time, with each command's wall time and peak memory (its
own CPU time and maximum resident set size, from ``os.wait4``).

    python benchmarks/scale.py                      # --per-domain 10: 30 of the paper's inputs
    python benchmarks/scale.py --per-domain 100     # the paper's 300 (hours on 2 CPU cores)

Finished runs are kept under ``--out`` (default ``scale-out``) with their timing and reused by
a rerun; ``--force`` reruns them. Prints the Markdown tables of docs/scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

MODELS = {"0.5B": "packaged:qwen2.5-coder-0.5b", "1.5B": "packaged:qwen2.5-coder-1.5b"}
DTYPES = ("float32", "bfloat16")


def commands(per_domain: int, out: Path) -> dict[str, list[str]]:
    """Every run: name -> the sinkscope command line."""
    common = [
        "--inputs",
        "paper-offline",
        "--per-domain",
        str(per_domain),
        "--no-figures",
        "--quiet",
    ]
    runs = {}
    for dtype in DTYPES:
        for size, spec in MODELS.items():
            for cmd, extra in (("measure", []), ("intervene", ["--preset", "paper"])):
                name = f"{cmd}-{size}-{dtype}"
                runs[name] = [
                    "sinkscope",
                    cmd,
                    "--model",
                    spec,
                    "--dtype",
                    dtype,
                    *extra,
                    *common,
                    "--out",
                    str(out / name),
                ]
        name = f"compare-{dtype}"
        runs[name] = [
            "sinkscope",
            "compare",
            "--models",
            ",".join(MODELS.values()),
            "--dtype",
            dtype,
            *common,
            "--out",
            str(out / name),
        ]
    return runs


def run(argv: list[str], log: Path) -> dict:
    """Run ``argv`` (``sinkscope`` is this interpreter's module) alone; its wall time, CPU time
    (user + system: what other jobs on the machine change least) and peak RSS."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.Popen(
            [sys.executable, "-m", "sinkscope", *argv[1:]], stdout=f, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with exit code {p.returncode}; see {log}")
    return {
        "command": " ".join(argv),
        "seconds": round(time.perf_counter() - t0, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),
    }


def cost(t: dict) -> str:
    return f"{t['seconds']:.0f} s / {t['cpu_seconds']:.0f} s, {t['peak_rss_gb']:.1f} GB"


def tables(out: Path, runs: dict[str, list[str]], timing: dict[str, dict]) -> str:
    """The Markdown of docs/scale.md's tables from the runs' outputs."""
    rows = []
    for dtype in DTYPES:
        for size in MODELS:
            m = json.loads((out / f"measure-{size}-{dtype}" / "summary.json").read_text())
            t1 = pd.read_csv(out / f"intervene-{size}-{dtype}" / "table1.csv")
            b = t1[(t1.intervention == "b") & (t1.dataset == "all")].set_index("scope")
            a = t1[(t1.intervention == "a") & (t1.dataset == "all")].set_index("scope")
            tm, ti = timing[f"measure-{size}-{dtype}"], timing[f"intervene-{size}-{dtype}"]
            rows.append(
                f"| {size} | {m['dtype']} | {m['n_examples']} | {m['bos_attention']['all']['mean']:.3f} ± {2 * m['bos_attention']['all']['se']:.3f} "
                f"| {m['sink_rate']['all']:.2f} | {a.loc['mid', 'mean']:.3f} | {b.loc['mid', 'pct_baseline']:.1f} % | {b.loc['all', 'pct_baseline']:.1f} % "
                f"| {b.loc['mid', 'delta_ce']:+.2f} | {cost(tm)} | {cost(ti)} |"
            )
    head = [
        "| model | dtype | inputs | BOS attention (band) ± 2SE | Sink_0^0.3 | intervene baseline (band) | b_Q := 0, band | b_Q := 0, all layers "
        "| Δ CE of b_Q := 0 (nats) | measure: wall / CPU, peak RSS | intervene: wall / CPU, peak RSS |",
        "|---" * 11 + "|",
    ]
    crow = [
        "| dtype | model | BOS attention | creating block | massive coords | shared-query share | b_Q := 0 | q̄ removed | compare (both models): wall / CPU, peak RSS |",
        "|---" * 9 + "|",
    ]
    for dtype in DTYPES:
        c = pd.read_csv(out / f"compare-{dtype}" / "compare.csv")
        tc = timing[f"compare-{dtype}"]
        for _, r in c[c.domain == "all"].iterrows():
            crow.append(
                f"| {dtype} | {r.model} | {r.bos_attention:.3f} | {r.creating_block} | {r.massive_coords} | {r.shared_query_share:.2f} "
                f"| {r.bq0_pct:.1f} % | {r.qbar0_pct:.1f} % | {cost(tc)} |"
            )
    cmds = ["```bash", *(timing[n]["command"] for n in runs), "```"]
    return "\n".join(head + rows + ["", *crow, "", *cmds]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-domain", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("scale-out"))
    ap.add_argument("--force", action="store_true", help="rerun finished runs")
    ap.add_argument("--only", default=None, help="comma-separated run names (default: all)")
    args = ap.parse_args()
    runs = commands(args.per_domain, args.out)
    (args.out / "timings").mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else set(runs)
    timing = {}
    for name, argv in runs.items():
        f = args.out / "timings" / f"{name}.json"
        if name in only and (
            args.force
            or not f.exists()
            or json.loads(f.read_text()).get("command") != " ".join(argv)
            or "cpu_seconds" not in json.loads(f.read_text())
        ):
            print(f"{name}: {' '.join(argv)}", file=sys.stderr, flush=True)
            f.write_text(json.dumps(run(argv, args.out / "timings" / f"{name}.log")))
        if f.exists():
            timing[name] = json.loads(f.read_text())
            print(f"  {name}: {cost(timing[name])}", file=sys.stderr, flush=True)
    if len(timing) == len(runs):
        print(tables(args.out, runs, timing))


if __name__ == "__main__":
    main()
