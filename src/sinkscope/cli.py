"""Command line: ``sinkscope measure`` (more commands arrive with later issues).

Every user error is one line on stderr and exit code 2; results appear atomically.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .errors import SinkscopeError

DEFAULT_OUT = "sinkscope-out/measure"


def _parse_band(text: str | None):
    if text is None:
        return None
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise SinkscopeError(f"--layers {text} is not START:STOP (0-based, stop exclusive), e.g. 3:11") from None
    return a, b


def _parse_keys(text: str) -> tuple[int, ...]:
    try:
        keys = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SinkscopeError(f"--keys {text} is not a comma-separated list of positions, e.g. 0,1") from None
    if not keys or 0 not in keys:
        raise SinkscopeError(f"--keys {text} must include 0 (the sink position), e.g. 0,1")
    return tuple(dict.fromkeys(keys))


def _common_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="hub id, HF directory, .gguf file or partial safetensors (default: SmolLM2-135M GGUF, offline)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def build_parser() -> argparse.ArgumentParser:
    from .data import SPEC_HELP

    parser = argparse.ArgumentParser(prog="sinkscope", description="Find, explain, break and fix attention sinks.")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="measure sink strength per example x layer x head")
    _common_model_args(m)
    m.add_argument("--inputs", default="default", help=f"{SPEC_HELP} (default: the offline corpus)")
    m.add_argument("--out", default=DEFAULT_OUT, help=f"output directory, replaced atomically (default: {DEFAULT_OUT})")
    m.add_argument("--max-tokens", type=int, default=40, help="tokens per input; shorter texts are skipped (default 40)")
    m.add_argument("--short", choices=("skip", "keep"), default="skip", help="texts under --max-tokens tokens: skip and count them (default) or keep them at their own length")
    m.add_argument("--per-domain", type=int, default=None, help="keep at most N inputs per domain (default: all; 100 for the default corpus)")
    m.add_argument("--batch-size", type=int, default=32)
    m.add_argument("--layers", default=None, help="layer band START:STOP, 0-based (default: the paper's 3:11 of 12, scaled)")
    m.add_argument("--keys", default="0,1", help="key positions to track (default 0,1; 0 = the sink)")
    m.add_argument("--eps", type=float, default=0.3, help="threshold of Gu et al.'s Sink_k^eps (default 0.3)")
    m.add_argument("--seed", type=int, default=0, help="seed of the default corpus")
    m.add_argument("--bos", action="store_true", help="prepend the tokenizer's BOS token (the paper does not)")
    m.add_argument("--baseline", default=None, help="an earlier summary.json: adds %% of its means")
    m.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    m.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def cmd_measure(args) -> int:
    from .data import effective_per_domain, parse_spec, read_examples, tokenize_examples
    from .experiments import measure
    from .io import atomic_output_dir, check_output_dir, write_json_atomic
    from .models import load_model
    from .report import figures

    keys = _parse_keys(args.keys)
    band = _parse_band(args.layers)
    if args.batch_size < 1:
        raise SinkscopeError(f"--batch-size {args.batch_size} must be at least 1")
    if args.per_domain is not None and args.per_domain < 1:
        raise SinkscopeError(f"--per-domain {args.per_domain} must be at least 1")
    baseline = None
    if args.baseline:
        try:
            with open(args.baseline) as f:
                baseline = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise SinkscopeError(f"--baseline {args.baseline} is not a readable summary.json ({e}); pass a sinkscope summary") from None
    # cheap checks first: nothing slow runs when the output dir or the inputs are unusable
    check_output_dir(args.out)
    t0 = time.perf_counter()
    kind, _ = parse_spec(args.inputs)
    per_domain = effective_per_domain(args.inputs, args.per_domain)
    read = lambda tok: read_examples(args.inputs, tokenizer=tok, per_domain=per_domain, max_tokens=args.max_tokens, seed=args.seed)  # noqa: E731
    examples = read(None) if kind != "paper" else None
    model = load_model(args.model, device=args.device)
    model.adapter.require_forward()
    if examples is None:
        examples = read(model.tokenizer)
    inputs = tokenize_examples(examples, model.tokenizer, max_tokens=args.max_tokens, per_domain=per_domain, prepend_bos=args.bos, spec=args.inputs, keep_short=args.short == "keep")
    result = measure(model, inputs, keys=keys, batch_size=args.batch_size, band=band, eps=args.eps, progress=not args.quiet)
    summary = result.summary(baseline)
    summary["total_seconds"] = round(time.perf_counter() - t0, 2)
    with atomic_output_dir(args.out) as tmp:
        result.metrics_frame().to_csv(tmp / "metrics.csv", index=False, float_format="%.7g")
        result.per_layer_frame().to_csv(tmp / "per_layer.csv", index=False, float_format="%.7g")
        write_json_atomic(tmp / "summary.json", summary)
        if not args.no_figures:
            figures.bos_heatmap(result, tmp / "bos_heatmap.png")
            figures.domain_bars(summary, tmp / "bos_by_domain.png")
            figures.layer_profile(result, summary, tmp / "bos_by_layer.png")
    print(format_summary(summary))
    print(f"wrote {args.out}/ (metrics.csv, per_layer.csv, summary.json{'' if args.no_figures else ', 3 PNG figures'})")
    return 0


def _window(s: dict) -> str:
    w = s["query_window"]
    return f"{w[0]}..{w[1] - 1}" if isinstance(w, list) else f"{w} (lengths {s['seq_len_range'][0]}..{s['seq_len_range'][1]})"


def format_summary(s: dict) -> str:
    b0, b1 = s["layer_band"]
    lines = [
        f"model {s['model']}: {s['n_examples']} inputs x {s['seq_len']} tokens"
        + (f" (shorter texts kept whole: {s['seq_len_range'][0]}..{s['seq_len_range'][1]})" if isinstance(s["query_window"], str) else "")
        + (f" (skipped as too short: {s['skipped_short']})" if s["skipped_short"] else ""),
        f"BOS attention, layers {b0}..{b1 - 1} (0-based), queries {_window(s)}; uniform attention would give {s['uniform_baseline']:.3f}",
        f"  {'domain':<12}{'n':>5}{'mean':>9}{'SE':>8}{'±2SE':>18}{'all layers':>12}{'Sink_0^' + str(s['sink_rate']['eps']):>12}",
    ]
    for dom, a in s["bos_attention"].items():
        al = s["bos_attention_all_layers"][dom]["mean"]
        pct = f"  {a['pct_baseline']:.1f}% of baseline" if "pct_baseline" in a else ""
        lines.append(
            f"  {dom:<12}{a['n']:>5}{a['mean']:>9.3f}{a['se']:>8.4f}   [{a['ci_low']:.3f}, {a['ci_high']:.3f}]{al:>12.3f}{s['sink_rate'][dom]:>12.3f}{pct}"
        )
    per_layer = s["bos_attention_per_layer"]["all"]
    lines.append("  per layer (all): " + " ".join(f"{v:.2f}" for v in per_layer))
    return "\n".join(lines)


COMMANDS = {"measure": cmd_measure}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return COMMANDS[args.command](args)
    except SinkscopeError as e:
        print(f"sinkscope: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sinkscope: interrupted; no output was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
