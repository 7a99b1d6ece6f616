"""How fast a bad argument is answered: each case runs ``sinkscope ...`` as a user would (a new
process, offline, empty hub cache), and its wall time is printed beside two baselines measured in
the same run: ``sinkscope --version`` (the CLI's own start-up) and ``python -c "import torch"``
(what every answer used to wait for). The goal is under 0.5 s for every case.

    python benchmarks/errors.py              # ~20 s on 2 cores
    python benchmarks/errors.py --repeat 5
    git worktree add /tmp/before REV && python benchmarks/errors.py --against /tmp/before
                                             # the same cases on an older checkout, side by side

Ends with: worst_s=<s> worst_case=<args> goal_met=<True|False> torch_import_s=<s>
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

CASES = [
    "measure --layers 3:99",
    "measure --max-tokens 500",
    "measure --model ./no/such/model",
    "measure --model packaged:nope",
    "measure --model gtp2",
    "measure --inputs text:/nonexistent.txt",
    "intervene --edit x=frobnicate:1",
    "intervene --coords 1000",
    "compare --models default,./missing",
    "mitigate --strengths 2",
    "reproduce --layers 3:99",
    "reproduce --model EleutherAI/pythia-70m@step1000",
    "sweep --out OUT --lengths 128",
    "dynamics --checkpoints ./no/such/ckpt",
    "train --out OUT --context 0",
]


def timed(cmd: list[str], env: dict, cwd: str, repeat: int) -> tuple[float, int, str]:
    """Median wall seconds of ``cmd`` over ``repeat`` runs, its exit code and last stderr line."""
    times, code, last = [], 0, ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
        times.append(time.perf_counter() - t0)
        code, last = p.returncode, (p.stderr.strip().splitlines() or [""])[-1]
    return statistics.median(times), code, last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per case, median kept (default 3)")
    ap.add_argument(
        "--against",
        default=None,
        help="a checkout of another sinkscope version (its src/ is put first on PYTHONPATH): "
        "each case is timed there too",
    )
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="sinkscope-errors-")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": os.path.join(tmp, "hf")}
    exe = [sys.executable, "-m", "sinkscope"]
    version, _, _ = timed([*exe, "--version"], env, tmp, args.repeat)
    torch_s, _, _ = timed([sys.executable, "-c", "import torch"], env, tmp, args.repeat)
    print(f"baseline  sinkscope --version      {version:6.2f} s")
    print(f"baseline  python -c 'import torch' {torch_s:6.2f} s")
    old_env = None
    if args.against:
        src = os.path.join(os.path.abspath(args.against), "src")
        old_env = {**env, "PYTHONPATH": src + os.pathsep + env.get("PYTHONPATH", "")}
    worst = (0.0, "")
    for case in CASES:
        argv = [os.path.join(tmp, "out") if a == "OUT" else a for a in case.split()]
        s, code, last = timed([*exe, *argv], env, tmp, args.repeat)
        ok = "ok " if code == 2 and last.startswith("sinkscope: error:") else "BAD"
        before = ""
        if old_env is not None:
            b, _, _ = timed([*exe, *argv], old_env, tmp, args.repeat)
            before = f"  (--against: {b:5.2f} s, x{b / s:4.1f} slower)"
        print(f"{ok} {s:5.2f} s  x{s / version:4.1f} of --version{before}  sinkscope {case}")
        print(f"           {last[:110]}")
        worst = max(worst, (s, case))
    print(
        f"worst_s={worst[0]:.2f} worst_case={worst[1]!r} goal_met={worst[0] < 0.5} "
        f"torch_import_s={torch_s:.2f}"
    )


if __name__ == "__main__":
    main()
