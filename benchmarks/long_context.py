"""Long context: sinkscope's capture against HF eager ``output_attentions`` on SmolLM2-135M.

One forward pass of the transformer trunk (no LM head) over T tokens of natural text (the
offline corpus's texts of one domain, concatenated until T tokens; batch 1, no BOS prepended),
for each method and T:
  bare       - the trunk with SDPA attention, nothing measured (the floor)
  sinkscope  - the same pass inside KeyAttentionCapture (key 0), then the paper metric (mean
               attention from the second-half queries T//2..T-1 to index 0, per layer and head)
  eager      - HF eager attention with output_attentions=True, the same metric from the T x T
               patterns it returns (what a user of HF / TransformerLens-style caches does)

Each (method, T) runs in a fresh child process (``--no-isolate``: all in this one): time of the
pass (median of ``--repeats``) and its CPU seconds (steadier than wall time on a shared machine),
peak RSS of the process during it (VmHWM, reset after the model is loaded) and the activation
memory (that peak minus the RSS before the pass). Results: docs/long-context.md. Before a pass the
child predicts its memory (eager keeps layers x heads x T^2 fp32 probabilities) and skips it,
recorded as "does not fit: needs X GiB", when it would not fit in the memory available now less
``--margin-gib``; a hard address-space limit at that size makes a wrong prediction an error, not an
OOM kill. Prints ratios to `bare`, eager against sinkscope, and max|BOS(sinkscope) - BOS(eager)|
where both ran.

    python benchmarks/long_context.py                                  # T = 1k, 4k, 16k, 32k
    python benchmarks/long_context.py --lengths 1024,2048 --out long.csv
    python benchmarks/long_context.py --quick                          # tiny random Llama: seconds
"""

from __future__ import annotations

import os
import sys

# benchmarks/profile.py shadows the stdlib `profile` that torch imports: keep this folder off the path
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import csv  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

METHODS = ("bare", "sinkscope", "eager")
DOMAINS = ("nl", "math", "code")
TINY = "tiny"  # --model tiny: a random 3-layer Llama (sinkscope.models.tiny), for smoke tests
GB = 2**30  # sizes are reported in GiB
COLUMNS = (
    "length",
    "method",
    "status",
    "seconds",
    "cpu_s",
    "peak_rss_gib",
    "activation_gib",
    "predicted_gib",
    "process_peak_gib",
    "time_x_bare",
    "activation_x_bare",
    "cpu_util",
    "bos_band",
    "max_abs_diff_vs_eager",
)
TOO_BIG = ("does not fit:", "out of memory", "failed (killed")  # statuses: longer T is not tried
# glibc then maps every large tensor and unmaps it on free, so RSS follows live memory
CHILD_ENV = {"TOKENIZERS_PARALLELISM": "false", "MALLOC_MMAP_THRESHOLD_": "131072"}


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


# ---- inputs and model ------------------------------------------------------------------------


def load(spec: str):
    """``(SinkModel, encode(text) -> list[int])``; ``tiny`` is a seeded random Llama whose ids are
    GPT-2 tokens modulo its vocabulary."""
    from sinkscope.models import load_model

    if spec != TINY:
        m = load_model(spec)
        if m.tokenizer is None:
            raise UsageError(f"--model {spec} has no tokenizer; give a complete model")
        return m, lambda text: m.tokenizer(text, add_special_tokens=False)["input_ids"]
    import torch
    from transformers import AutoModelForCausalLM

    from sinkscope.data.tokenizers import offline_gpt2_tokenizer
    from sinkscope.models import SinkModel, adapter_for
    from sinkscope.models.tiny import tiny_config

    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(tiny_config("llama"), attn_implementation="sdpa").eval()
    tok, vocab = offline_gpt2_tokenizer(), hf.config.vocab_size
    return SinkModel("tiny random Llama", hf, adapter_for(hf)), lambda text: [
        i % vocab for i in tok(text)["input_ids"]
    ]


def long_ids(encode, T: int, domain: str, seed: int = 0) -> list[int]:
    """The first ``T`` tokens of the domain's offline-corpus texts joined by blank lines (more
    texts drawn until there are enough; a one-line error when the domain has too few)."""
    from sinkscope.data.corpus import default_corpus

    per_domain, have = 64, -1
    while True:
        corpus = default_corpus(seed, per_domain=per_domain, oversample=1)
        texts = [e.text for e in corpus if e.domain == domain]
        ids = encode("\n\n".join(texts))
        if len(ids) >= T:
            return ids[:T]
        if len(texts) == have:  # the domain's texts are exhausted (nl, code: what the stdlib ships)
            raise UsageError(
                f"--domain {domain} has {len(ids)} tokens of text, fewer than T={T}; "
                "use a shorter --lengths or --domain code"
            )
        have, per_domain = len(texts), per_domain * 4


# ---- one measurement -------------------------------------------------------------------------


def _proc(field: str, path: str = "/proc/self/status") -> int:
    """A kB field of /proc/self/status or /proc/meminfo, in bytes."""
    return int(re.search(rf"^{field}:\s+(\d+)", open(path).read(), re.M).group(1)) * 1024


def predicted_bytes(method: str, T: int, L: int, H: int, d: int, d_ff: int) -> int:
    """Activation memory of one pass: eager keeps L*H fp32 [T, T] probabilities and holds the
    last layer's scores and its float mask besides; bare / sinkscope are O(T) (hidden states,
    MLP activations, the captured [L, H, T] column; generous constant factors)."""
    linear = 4 * T * (16 * d + 4 * d_ff) + 4 * T * L * H * 3
    if method != "eager":
        return linear
    return linear + 4 * T * T * (L * H + 2 * H + 1)


def fit_check(method: str, T: int, dims: dict, margin_gib: float) -> tuple[dict, int]:
    """``(row, bytes allowed)``: the row has a 'does not fit' status when the predicted memory
    exceeds what is available now less the margin."""
    need = predicted_bytes(
        method, T, dims["n_layers"], dims["n_heads"], dims["d_model"], dims["d_ff"]
    )
    row = {"length": T, "method": method, "predicted_gib": need / GB, **dims}
    avail = _proc("MemAvailable", "/proc/meminfo")
    allowed = int(avail - margin_gib * GB)
    if need > allowed:
        row["status"] = (
            f"does not fit: needs {need / GB:.1f} GiB, {avail / GB:.1f} GiB available"
            + (f" less {margin_gib:g} kept free" if margin_gib else "")
        )
    return row, allowed


def runner(method: str, model, ids):
    """``run() -> BOS attention [layer, head]`` (None for bare) for one method."""
    import torch

    from sinkscope.metrics import KeyAttentionCapture, key_attention, query_window

    ad, trunk = model.adapter, model.adapter.trunk()
    if method == "bare":

        def run():
            trunk(input_ids=ids, use_cache=False)
    elif method == "sinkscope":

        def run():
            with KeyAttentionCapture(ad, (0,)) as cap:
                trunk(input_ids=ids, use_cache=False)
                return key_attention(cap.stacked(), 0)[0]
    elif method == "eager":

        def run():
            model.hf.set_attn_implementation("eager")
            try:
                att = trunk(input_ids=ids, use_cache=False, output_attentions=True).attentions
                q = query_window(ids.shape[1])
                return torch.stack([a[0, :, q, 0].mean(-1) for a in att])
            finally:
                model.hf.set_attn_implementation("sdpa")
    else:
        raise UsageError(f"unknown method {method}")

    def timed():
        with torch.inference_mode():
            return run()

    return timed


def measure_cell(
    method: str,
    model,
    encode,
    T: int,
    *,
    domain: str = "code",
    repeats: int = 1,
    margin_gib: float = 2.0,
    limit: bool = False,
) -> dict:
    """One (method, T): time, peak RSS and BOS attention, or a 'does not fit' row without running.
    ``limit``: cap this process's address space at what the memory check allowed (child processes)."""
    import gc
    import resource

    import torch

    from sinkscope.metrics import resolve_band

    ad = model.adapter
    dims = {
        "n_layers": ad.n_layers,
        "n_heads": ad.n_heads,
        "d_model": ad.d_model,
        "d_ff": getattr(model.hf.config, "intermediate_size", None) or 4 * ad.d_model,
    }
    ids = torch.tensor([long_ids(encode, T, domain)])
    row, allowed = fit_check(method, T, dims, margin_gib)
    if "status" in row:
        return row
    need = row["predicted_gib"] * GB
    run = runner(method, model, ids)
    runner(method, model, ids[:, : min(T, 64)])()  # warm-up: lazy initialisation, thread pools
    if limit:
        resource.setrlimit(
            resource.RLIMIT_AS, (_proc("VmSize") + int(allowed), resource.RLIM_INFINITY)
        )
    gc.collect()
    load_peak = _proc("VmHWM")  # loading the model (a GGUF is dequantised) and the warm-up
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak-RSS high-water mark
    before = _proc("VmRSS")
    times, cpu = [], 0.0
    try:
        for _ in range(repeats):
            c, t = time.process_time(), time.perf_counter()
            bos = run()
            times.append(time.perf_counter() - t)
            cpu += time.process_time() - c
    except (MemoryError, RuntimeError) as e:  # the address-space limit: the prediction was low
        if "memory" not in str(e).lower() and not isinstance(e, MemoryError):
            raise
        row["status"] = (
            f"out of memory at the {allowed / GB:.1f} GiB limit (predicted {need / GB:.1f} GiB)"
        )
        return row
    peak = _proc("VmHWM")
    threads = torch.get_num_threads()
    row.update(
        status="ok",
        seconds=statistics.median(times),
        cpu_s=cpu / repeats,
        peak_rss_gib=peak / GB,
        activation_gib=(peak - before) / GB,
        process_peak_gib=max(peak, load_peak) / GB,
        cpu_util=cpu / sum(times) / threads,
        threads=threads,
        load_avg=os.getloadavg()[0],
    )
    if bos is not None:
        lo, hi = resolve_band(None, ad.n_layers)
        row["bos"] = bos.double().tolist()
        row["bos_band"] = float(bos[lo:hi].mean())
    return row


# ---- the table -------------------------------------------------------------------------------


def _child(spec: dict) -> None:
    try:
        if spec.get("threads"):
            import torch

            torch.set_num_threads(spec["threads"])
        model, encode = load(spec["model"])
        row = measure_cell(
            spec["method"],
            model,
            encode,
            spec["length"],
            domain=spec["domain"],
            repeats=spec["repeats"],
            margin_gib=spec["margin_gib"],
            limit=True,
        )
    except Exception as e:
        from sinkscope.errors import SinkscopeError

        if not isinstance(e, (UsageError, SinkscopeError)):
            raise  # a bug: its traceback on stderr, the parent records the cell as failed
        row = {"error": str(e)}  # the user's to fix (a model spec, a domain too short): exit 2
    print("\n" + json.dumps(row), flush=True)


def run_child(spec: dict) -> dict:
    """``measure_cell`` in a fresh Python process (its own peak RSS and address-space limit)."""
    r = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, **CHILD_ENV},
    )
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        why = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
        killed = " (killed: out of memory?)" if r.returncode < 0 else ""
        return {
            "length": spec["length"],
            "method": spec["method"],
            "status": f"failed{killed}: {why[:200]}",
        }
    row = json.loads(lines[-1])
    if "error" in row:
        raise UsageError(row["error"])
    return row


def finish(rows: list[dict]) -> list[dict]:
    """Ratios to bare and max|BOS - eager| within each length (in place; returns ``rows``)."""
    for T in {r["length"] for r in rows}:
        at = {r["method"]: r for r in rows if r["length"] == T and r.get("status") == "ok"}
        for r in at.values():
            if "bare" in at:
                r["time_x_bare"] = r["seconds"] / at["bare"]["seconds"]
                if at["bare"]["activation_gib"] > 0:
                    r["activation_x_bare"] = r["activation_gib"] / at["bare"]["activation_gib"]
            if "bos" in r and "eager" in at:
                pairs = zip(sum(r["bos"], []), sum(at["eager"]["bos"], []))
                r["max_abs_diff_vs_eager"] = max(abs(a - b) for a, b in pairs)
    return rows


def run(
    model: str,
    lengths: list[int],
    methods: list[str],
    *,
    domain: str = "code",
    isolate: bool = True,
    repeats: int = 1,
    margin_gib: float = 2.0,
    threads: int | None = None,
    progress: bool = True,
    on_row=None,
) -> list[dict]:
    """Every (length, method), smallest length first; a method that did not fit at one length is
    not tried at longer ones. ``on_row(rows)`` after each cell (to write partial results)."""
    import torch
    from tqdm.auto import tqdm

    if threads:
        torch.set_num_threads(threads)

    loaded = None if isolate else load(model)
    rows, too_big, dims = [], {}, None
    cells = [(T, m) for T in sorted(lengths) for m in methods]
    for T, m in tqdm(cells, desc="long context", unit="pass", disable=not progress):
        if m in too_big:
            row = {"length": T, "method": m, "status": f"does not fit (did not at T={too_big[m]})"}
        elif (
            dims and "status" in fit_check(m, T, dims, margin_gib)[0]
        ):  # known not to fit: no child
            row = fit_check(m, T, dims, margin_gib)[0]
        elif isolate:
            row = run_child(
                {
                    "model": model,
                    "method": m,
                    "length": T,
                    "domain": domain,
                    "repeats": repeats,
                    "margin_gib": margin_gib,
                    "threads": threads,
                }
            )
        else:
            row = measure_cell(m, *loaded, T, domain=domain, repeats=repeats, margin_gib=margin_gib)
        if dims is None and "d_ff" in row:
            dims = {k: row[k] for k in ("n_layers", "n_heads", "d_model", "d_ff")}
        if row["status"].startswith(TOO_BIG) and m not in too_big:
            too_big[m] = T
        rows.append(row)
        finish(rows)
        if on_row:
            on_row(rows)
    return rows


def table_text(rows: list[dict]) -> str:
    def f(x, spec):
        return (
            format(x, spec) if isinstance(x, (int, float)) else "-".rjust(int(spec.split(".")[0]))
        )

    cols = (
        ("time s", "seconds", "9.2f"),
        ("cpu s", "cpu_s", "9.1f"),
        ("x bare", "time_x_bare", "8.2f"),
        ("peak GiB", "peak_rss_gib", "9.2f"),
        ("act. GiB", "activation_gib", "9.3f"),
        ("x bare", "activation_x_bare", "9.1f"),
        ("cpu", "cpu_util", "6.2f"),
        ("BOS band", "bos_band", "10.4f"),
        ("max|d| eager", "max_abs_diff_vs_eager", "14.2e"),
    )
    head = "".join(f"{h:>{int(spec.split('.')[0])}}" for h, _, spec in cols)
    out = [f"{'T':>6} {'method':<10}{head}  status"]
    for r in rows:
        cells = "".join(f(r.get(k), spec) for _, k, spec in cols)
        out.append(f"{r['length']:>6} {r['method']:<10}{cells}  {r['status']}")
    return "\n".join(out)


def summary(rows: list[dict]) -> str:
    """Eager against sinkscope at each length both ran, and where eager stops fitting."""
    lines = []
    for T in sorted({r["length"] for r in rows}):
        at = {r["method"]: r for r in rows if r["length"] == T}
        s, e = at.get("sinkscope", {}), at.get("eager", {})
        if s.get("status") == "ok" and e.get("status") == "ok":
            act = e["activation_gib"] / max(s["activation_gib"], 1e-9)
            lines.append(
                f"T={T}: eager / sinkscope time {e['seconds'] / s['seconds']:.2f}x, peak RSS "
                f"{e['peak_rss_gib'] / s['peak_rss_gib']:.1f}x, activation {act:.0f}x; "
                f"max|BOS diff| {s.get('max_abs_diff_vs_eager', float('nan')):.2e}"
            )
        elif e and e.get("status", "").startswith("does not fit"):
            lines.append(f"T={T}: eager {e['status']}")
    eager = [r for r in rows if r["method"] == "eager" and "n_layers" in r]
    bases = [
        (x["peak_rss_gib"] - x["activation_gib"]) * GB for x in rows if x.get("status") == "ok"
    ]
    if eager and bases:
        L, H, total = eager[0]["n_layers"], eager[0]["n_heads"], _proc("MemTotal", "/proc/meminfo")
        fits = [
            T
            for T in range(256, 1 << 17, 256)
            if max(bases) + predicted_bytes("eager", T, L, H, 0, 0) <= total
        ]
        lines.append(
            f"eager output_attentions fits in this machine's {total / GB:.1f} GiB total up to "
            f"T ~ {fits[-1] if fits else 0} (predicted, with the model loaded and nothing else running)"
        )
    return "\n".join(lines)


def write_out(path: str, rows: list[dict], settings: dict) -> None:
    from sinkscope.io import write_json_atomic, write_text_atomic

    if path.endswith(".json"):
        write_json_atomic(path, {"settings": settings, "rows": rows})
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model", default="packaged:smollm2", help="a model spec, or 'tiny' (random Llama)"
    )
    p.add_argument("--lengths", default="1024,4096,16384,32768", help="comma-separated T (tokens)")
    p.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated, from {','.join(METHODS)}"
    )
    p.add_argument(
        "--domain", default="code", help=f"corpus domain ({', '.join(DOMAINS)}; nl: ~28k tokens)"
    )
    p.add_argument("--repeats", type=int, default=1, help="timed passes per cell (median)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's, one per core)"
    )
    p.add_argument(
        "--margin-gib", type=float, default=2.0, help="memory left free for other processes"
    )
    p.add_argument(
        "--no-isolate", dest="isolate", action="store_false", help="all cells in this process"
    )
    p.add_argument(
        "--out", default=None, help="FILE.csv or FILE.json: the table, rewritten after every cell"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: --model tiny --lengths 32,64 --domain nl --no-isolate",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)

    def error(message):  # argparse's own errors as one line too
        raise UsageError(message)

    p.error = error
    a = p.parse_args(argv)
    if a.child:
        return a
    if a.quick:
        a.model, a.isolate = TINY, False
        if a.lengths == p.get_default("lengths"):
            a.lengths = "32,64"
        if a.domain == p.get_default("domain"):
            a.domain = "nl"  # the quickest to read (code parses stdlib modules)
    try:
        a.lengths = [int(x) for x in a.lengths.split(",") if x.strip()]
    except ValueError:
        raise UsageError(
            f"--lengths {a.lengths} is not a comma-separated list of token counts, e.g. 1024,4096"
        ) from None
    if not a.lengths or min(a.lengths) < 4:
        raise UsageError("--lengths needs token counts of at least 4, e.g. 1024,4096")
    a.methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in a.methods if m not in METHODS]
    if bad or not a.methods:
        raise UsageError(f"--methods {','.join(bad) or '(none)'}: choose from {','.join(METHODS)}")
    if a.domain not in DOMAINS:
        raise UsageError(f"--domain {a.domain}: choose from {', '.join(DOMAINS)}")
    if a.threads is not None and a.threads < 1:
        raise UsageError(f"--threads {a.threads} must be at least 1")
    if a.repeats < 1:
        raise UsageError(f"--repeats {a.repeats} must be at least 1")
    if not 0 <= a.margin_gib < 1e4:
        raise UsageError(f"--margin-gib {a.margin_gib} must be a non-negative number of GiB")
    if a.out is not None:
        if not a.out.endswith((".csv", ".json")):
            raise UsageError(f"--out {a.out} must end in .csv or .json")
        parent = os.path.dirname(os.path.abspath(a.out))
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            raise UsageError(f"--out {a.out}: directory {parent} does not exist or is not writable")
    return a


def main(argv=None) -> int:
    try:
        a = parse_args(argv)
        if a.child:
            _child(json.loads(a.child))
            return 0
        import torch

        if a.threads:
            torch.set_num_threads(a.threads)
        settings = {k: v for k, v in vars(a).items() if k not in ("child", "progress", "quick")}
        settings.update(
            torch=torch.__version__,
            threads=torch.get_num_threads(),
            cpus=os.cpu_count(),
            mem_total_gib=round(_proc("MemTotal", "/proc/meminfo") / GB, 1),
        )
        print(
            f"{a.model}: T = {','.join(map(str, sorted(a.lengths)))}, methods {','.join(a.methods)}, "
            f"domain {a.domain}, batch 1; torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{settings['mem_total_gib']} GiB RAM"
        )
        on_row = (lambda rows: write_out(a.out, rows, settings)) if a.out else None
        rows = run(
            a.model,
            a.lengths,
            a.methods,
            domain=a.domain,
            isolate=a.isolate,
            repeats=a.repeats,
            margin_gib=a.margin_gib,
            threads=a.threads,
            progress=a.progress,
            on_row=on_row,
        )
    except UsageError as e:
        print(f"long_context.py: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from sinkscope.errors import SinkscopeError

        if not isinstance(e, SinkscopeError):
            raise
        print(f"long_context.py: error: {e}", file=sys.stderr)
        return 2
    print()
    print(table_text(rows))
    print(summary(rows))
    if a.out:
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
