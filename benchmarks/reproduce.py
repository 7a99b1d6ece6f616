"""What the stage cache of ``sinkscope reproduce`` buys: a cold run against a rerun that reuses
every stage, and against the separate commands a user would otherwise run, in one process.

    python benchmarks/reproduce.py                 # embedded model, 100 inputs per domain
    python benchmarks/reproduce.py --per-domain 20 # quicker

Methods (same model, inputs and settings):
  separate  - measure + explain + intervene + compare + mitigate, each on its own (the baseline:
              what reproducing the study took before this command; compare / mitigate each
              recompute the circuit)
  cold      - sinkscope reproduce into an empty directory
  cached    - the same command again: every stage reused, only the report is rebuilt
Prints seconds and ratios to `separate`; the last line is machine-readable JSON.
"""

from __future__ import annotations

import os
import sys

# benchmarks/profile.py shadows the stdlib `profile` that torch imports: keep this folder off the path
sys.path[:] = [
    p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))
]

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-domain", type=int, default=100)
    ap.add_argument("--strengths", default="1,0.5,0")
    a = ap.parse_args()
    from sinkscope.cli import main as cli

    common = ["--per-domain", str(a.per_domain), "--quiet"]
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        for cmd in (
            ["measure"],
            ["explain"],
            ["intervene"],
            ["compare", "--models", "default"],
            ["mitigate", "--strengths", a.strengths],
        ):
            assert cli([*cmd, "--out", f"{d}/{cmd[0]}", *common]) == 0
        separate = time.perf_counter() - t
        t = time.perf_counter()
        assert cli(["reproduce", "--out", f"{d}/rep", "--strengths", a.strengths, *common]) == 0
        cold = time.perf_counter() - t
        t = time.perf_counter()
        assert cli(["reproduce", "--out", f"{d}/rep", "--strengths", a.strengths, *common]) == 0
        cached = time.perf_counter() - t
    print(f"\n{'method':<10}{'seconds':>10}{'vs separate':>14}")
    for name, s in (("separate", separate), ("cold", cold), ("cached", cached)):
        print(f"{name:<10}{s:>10.1f}{s / separate:>13.2f}x")
    print(
        json.dumps(
            {
                "per_domain": a.per_domain,
                "separate_s": round(separate, 2),
                "cold_s": round(cold, 2),
                "cached_s": round(cached, 2),
                "cold_ratio": round(cold / separate, 3),
                "cached_ratio": round(cached / separate, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
