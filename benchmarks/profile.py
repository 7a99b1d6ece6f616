"""Cost of measuring BOS attention vs. a bare forward pass (GPT-2-small shape, random weights).

Methods, all on the same model and tokens (B=2, T=1024 by default):
  bare       - the transformer trunk with SDPA attention, nothing measured (the floor)
  sinkscope  - the same pass with KeyAttentionCapture, then the BOS metric
  hf_eager   - HF eager attention with output_attentions=True, metric from the T x T patterns
  tlens      - TransformerLens (TransformerBridge) run_with_cache on hook_pattern, if installed

Time: median of --repeats runs in this process, methods interleaved. Activation memory: each
method in --mem-repeats child processes (median), peak RSS (VmHWM, reset via /proc/self/clear_refs) minus the
RSS before the forward pass. Prints ratios to `bare`; the last line is machine-readable.

    python benchmarks/profile.py            # B=2, T=1024, GPT-2 small shape
    python benchmarks/profile.py --T 256    # quicker
"""

from __future__ import annotations

import os
import sys

# this file is named like the stdlib `profile` module that torch/transformers import: keep
# its own folder off the import path so `import profile` finds the stdlib one
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

METHODS = ("bare", "sinkscope", "hf_eager", "tlens")


def _status(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024


def build(args, attn="sdpa"):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=args.layers, n_embd=args.d_model, n_head=args.heads, n_positions=max(1024, args.T)
    )
    model = GPT2LMHeadModel._from_config(cfg, attn_implementation=attn).eval()
    ids = torch.randint(
        0, cfg.vocab_size, (args.B, args.T), generator=torch.Generator().manual_seed(1)
    )
    return model, ids


def make_runner(method: str, args):
    """Return ``run() -> bos [batch, layer, head]`` for one method (model built once)."""
    from sinkscope.metrics import KeyAttentionCapture, key_attention
    from sinkscope.models import adapter_for

    half = slice(args.T // 2, args.T)
    if method in ("bare", "sinkscope"):
        model, ids = build(args, "sdpa")
        ad = adapter_for(model)
        if method == "bare":

            def run():
                with torch.inference_mode():
                    model.transformer(input_ids=ids, use_cache=False)
                return None
        else:

            def run():
                with torch.inference_mode(), KeyAttentionCapture(ad, (0,)) as cap:
                    model.transformer(input_ids=ids, use_cache=False)
                    return key_attention(cap.stacked(), 0)

        return run
    if method == "hf_eager":
        model, ids = build(args, "eager")

        def run():
            with torch.inference_mode():
                att = model.transformer(
                    input_ids=ids, use_cache=False, output_attentions=True
                ).attentions
                return torch.stack([a[:, :, half, 0].mean(-1) for a in att], 1)

        return run
    if method == "tlens":
        try:
            from transformer_lens.model_bridge import TransformerBridge
        except ImportError:
            return None
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        model, ids = build(args, "eager")
        d = tempfile.mkdtemp(prefix="sinkscope-tl-")
        model.config.save_pretrained(d)  # config only: the bridge wraps the in-memory model
        from sinkscope.data.tokenizers import offline_gpt2_tokenizer

        tok = offline_gpt2_tokenizer()
        tok.save_pretrained(d)
        from transformers import AutoTokenizer

        bridge = TransformerBridge.boot_transformers(
            d, hf_model=model, tokenizer=AutoTokenizer.from_pretrained(d)
        )
        names = {f"blocks.{l}.attn.hook_pattern" for l in range(args.layers)}

        def run():
            with torch.inference_mode():
                _, cache = bridge.run_with_cache(
                    ids, names_filter=lambda n: n in names, return_type=None
                )
                return torch.stack(
                    [
                        cache[f"blocks.{l}.attn.hook_pattern"][:, :, half, 0].mean(-1)
                        for l in range(args.layers)
                    ],
                    1,
                )

        return run
    raise KeyError(method)


def child_memory(method: str, args) -> None:
    run = make_runner(method, args)
    if run is None:
        print(json.dumps({"method": method, "skipped": True}))
        return
    import gc

    gc.collect()
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak-RSS high-water mark
    before = _status("VmRSS")
    run()
    peak = _status("VmHWM")
    print(json.dumps({"method": method, "activation_bytes": peak - before}))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--B", type=int, default=2)
    p.add_argument("--T", type=int, default=1024)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--mem-repeats", type=int, default=3, help="child processes per method for memory (median)"
    )
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child_memory(args.child, args)

    methods = [m for m in args.methods.split(",") if m]
    print(
        f"GPT-2 shape: {args.layers} layers, d={args.d_model}, {args.heads} heads; B={args.B}, T={args.T}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    runners = {}
    for m in methods:
        r = make_runner(m, args)
        if r is None:
            print(f"  {m}: not installed, skipped")
            continue
        runners[m] = r
    outs = {m: r() for m, r in runners.items()}  # warm-up, and the values to compare
    times = {m: [] for m in runners}
    for _ in range(args.repeats):
        for m, r in runners.items():
            t = time.perf_counter()
            r()
            times[m].append(time.perf_counter() - t)
    med = {m: statistics.median(v) for m, v in times.items()}

    mem = {}
    for m in runners:
        cmd = [sys.executable, __file__, "--child", m] + [
            f"--{k.replace('_', '-')}={v}"
            for k, v in vars(args).items()
            if k not in ("child", "methods", "repeats", "mem_repeats")
        ]
        samples = []
        # a fixed mmap threshold: glibc then maps every large tensor and unmaps it on free, so RSS
        # follows live memory instead of the allocator's history (its dynamic threshold otherwise)
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "MALLOC_MMAP_THRESHOLD_": "131072"}
        for _ in range(args.mem_repeats):
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = [l for l in res.stdout.splitlines() if l.startswith("{")]
            if line and "activation_bytes" in json.loads(line[-1]):
                samples.append(json.loads(line[-1])["activation_bytes"])
        mem[m] = statistics.median(samples) if samples else None

    ref = outs.get("hf_eager")
    print(
        f"\n{'method':<11}{'time s':>9}{'x bare':>9}{'act. MiB':>11}{'x bare':>9}{'max|BOS - eager|':>19}"
    )
    for m in runners:
        tr = med[m] / med["bare"] if "bare" in med else float("nan")
        mb = mem[m] / 2**20 if mem[m] is not None else float("nan")
        mr = mem[m] / mem["bare"] if mem.get("bare") and mem[m] is not None else float("nan")
        diff = (
            (outs[m] - ref).abs().max().item()
            if outs[m] is not None and ref is not None
            else float("nan")
        )
        print(f"{m:<11}{med[m]:>9.3f}{tr:>9.3f}{mb:>11.1f}{mr:>9.3f}{diff:>19.2e}")
    if "sinkscope" in med and "bare" in med:
        print(
            f"time_ratio={med['sinkscope'] / med['bare']:.3f} memory_ratio={mem['sinkscope'] / mem['bare']:.3f}"
        )


if __name__ == "__main__":
    main()
