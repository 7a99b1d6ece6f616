"""The training commands: ``train`` (one small model, each sink-circuit component switchable)
and ``zoo`` (every variant x seed, compared). Torch-free at import: the options come from
:mod:`sinkscope.training.config` and :mod:`sinkscope.models.switches`."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import SinkscopeError
from . import flags


def _bool(text: str) -> bool:
    t = text.lower()
    if t in ("on", "true", "yes", "1"):
        return True
    if t in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not on/off")


ZOO_VARIANTS = ("full", "no_bq", "rotary", "no_pos", "no_mlp", "off_by_one", "gated", "sink_logit")
# studies.zoo.VARIANTS' names, torch-free for --help (tests/test_help.py keeps them in step)

TRAIN_HELP = {  # TrainConfig field: its option's help (the default is added)
    "data": "training text: default (the offline corpus) | text:PATH | jsonl:PATH:FIELD",
    "query_bias": "learned query bias b_Q (off: b_Q fixed at 0)",
    "positions": "positional information: learned absolute embeddings (GPT-2), rotary (RoPE) "
    "or none",
    "mlp": "an MLP in every block (off: attention-only blocks)",
    "normaliser": "attention normaliser: softmax; off_by_one (an extra zero logit with a zero "
    "value); sink_logit (the same with a learned logit per head, as GPT-OSS); gated (softmax, "
    "then a sigmoid gate on each head's output)",
    "n_layer": "number of blocks",
    "n_embd": "residual width d_model (a multiple of --heads with an even head size)",
    "n_head": "attention heads per block",
    "context": "training window length in tokens",
    "vocab": "size of the BPE vocabulary fitted to the data",
    "steps": "optimiser steps",
    "batch": "windows per step",
    "lr": "peak learning rate (linear warm-up, then cosine decay to 0.1x)",
    "weight_decay": "AdamW weight decay",
    "warmup": "warm-up steps",
    "bos": "start every window with <|endoftext|>",
    "synthetic": "share of training windows from a synthetic task on reserved tokens",
    "task": "the synthetic task: repeat (induction) or backcopy (bigram-backcopy)",
    "seed": "seed of the initial weights and the data order",
    "eval_every": "steps between validation loss + sink readouts (0: never)",
    "ckpt_every": "steps between checkpoint.pt saves, for --resume (0: never)",
}


def _config_flags() -> tuple[tuple[str, str, object], ...]:
    """``train``'s options that set a :class:`TrainConfig` field, in ``--help`` order: ``(flag,
    field, kind)``; ``kind`` is the value's type, or a tuple of its choices (None: text); the
    help is :data:`TRAIN_HELP`'s."""
    from ..models.switches import NORMALISERS, POSITIONS
    from ..training.config import TASKS

    return (
        ("--data", "data", None),
        ("--query-bias", "query_bias", _bool),
        ("--positions", "positions", POSITIONS),
        ("--mlp", "mlp", _bool),
        ("--normaliser", "normaliser", NORMALISERS),
        ("--layers", "n_layer", int),
        ("--width", "n_embd", int),
        ("--heads", "n_head", int),
        ("--context", "context", int),
        ("--vocab", "vocab", int),
        ("--steps", "steps", int),
        ("--batch", "batch", int),
        ("--lr", "lr", float),
        ("--weight-decay", "weight_decay", float),
        ("--warmup", "warmup", int),
        ("--bos", "bos", _bool),
        ("--synthetic", "synthetic", float),
        ("--task", "task", TASKS),
        ("--seed", "seed", int),
        ("--eval-every", "eval_every", int),
        ("--ckpt-every", "ckpt_every", int),
    )


def _train_args(p: argparse.ArgumentParser) -> None:
    """``sinkscope train``'s options: ``--out``, the run's settings (defaults from
    :class:`TrainConfig`), then what to keep, reuse or resume."""
    from ..training.config import TrainConfig

    d = TrainConfig()
    flags.describe(
        p,
        "sinkscope train --layers 2 --width 64 --steps 200 --save-at 0,100,200 "
        "--out sinkscope-out/train",
        note="Then: sinkscope dynamics --run sinkscope-out/train; sinkscope measure --model "
        "sinkscope-out/train.",
    )
    p.add_argument(
        "--out",
        required=True,
        help="run directory (required): checkpoint.pt while training, then a HF model directory",
    )
    for flag, field, kind in _config_flags():
        kw: dict = {"choices": kind} if isinstance(kind, tuple) else {"type": kind}
        default = getattr(d, field)
        shown = default
        if kind is _bool:
            kw["metavar"] = "on|off"
            shown = "on" if default else "off"
        text = f"{TRAIN_HELP[field]} (default: {shown})"
        p.add_argument(flag, dest=field, default=default, help=text, **kw)
    p.add_argument(
        "--save-at",
        default=None,
        metavar="STEPS",
        help="keep the weights of these steps (e.g. 0,100,200,400; 0 = the initial weights) as "
        "HF directories in OUT/checkpoints/step-NNNNNN/, for sinkscope dynamics (default: none)",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        help="a directory with a tokenizer to reuse instead of fitting one (default: fit one "
        "of --vocab tokens to --data)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    p.add_argument("--force", action="store_true", help="start over in an existing --out")
    p.add_argument("--device", default="cpu", help="torch device to train on (default: cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (results still print)")


def cmd_train(args: argparse.Namespace) -> int:
    """Run ``sinkscope train``: build the :class:`TrainConfig` from the options and train."""
    from dataclasses import fields

    from ..training.config import TrainConfig, save_at_steps

    cfg = TrainConfig(
        **{f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    )
    cfg.validate()  # the settings, --save-at and --tokenizer checked before torch is imported
    if args.save_at is not None:
        save_at_steps(args.save_at, cfg.steps)
    if args.tokenizer and not os.path.isdir(args.tokenizer):
        raise SinkscopeError(
            f"--tokenizer {args.tokenizer} is not a directory; pass a folder with tokenizer files"
        )
    from ..training import read_tokenizer, train

    tok = read_tokenizer(args.tokenizer) if args.tokenizer else None
    command = flags.command_line(sys.argv[0] if sys.argv else "", sys.argv[1:])
    r = train(
        cfg,
        args.out,
        resume=args.resume,
        force=args.force,
        tokenizer=tok,
        progress=not args.quiet,
        command=command,
        device=args.device,
        save_at=args.save_at,
    )
    f = r["final"]
    sink = f"; BOS attention (layer band, T=40) {f['sink']:.3f}" if f["sink"] is not None else ""
    print(
        f"trained {cfg.steps} steps in {r['seconds']:.0f} s: validation loss {f['val_loss']:.3f}{sink}"
    )
    print(f"wrote {args.out}/ (HF model directory; load it with --model {args.out})")
    if r["checkpoints"]:
        print(
            f"kept steps {','.join(map(str, r['save_at']))} in {args.out}/checkpoints/ (sinkscope dynamics --run {args.out})"
        )
    return 0


def _zoo_args(p: argparse.ArgumentParser) -> None:
    flags.describe(
        p,
        "sinkscope zoo --variants full,no_bq --seeds 0",
        note="Each run of the small budget takes about 6 minutes on a 2-core CPU (the whole zoo: "
        "16 runs, under 2 h). Rerun the same command to resume: finished runs are reused.",
    )
    p.add_argument(
        "--budget",
        choices=("small", "gpu"),
        default="small",
        help="small: <= 2 h on a 2-core CPU; gpu: larger models on a CUDA device (default: small)",
    )
    p.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    p.add_argument(
        "--variants",
        default=None,
        help="comma-separated subset of the variants: "
        + ", ".join(ZOO_VARIANTS)
        + " (default: all)",
    )
    p.add_argument(
        "--out",
        default="sinkscope-out/zoo",
        help="zoo directory: one run per variant x seed plus zoo.csv / zoo.md / figures; reruns "
        "skip finished runs (default: sinkscope-out/zoo)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    from ..models.options import DTYPE_HELP

    p.add_argument("--dtype", default="auto", help="the analyses' dtype: " + DTYPE_HELP)
    flags.figure_args(p)
    flags.quiet_arg(p)


def cmd_zoo(args: argparse.Namespace) -> int:
    """Run ``sinkscope zoo``: train (or reuse) every run and print the comparison."""
    from ..studies.zoo import run_zoo

    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError:
        raise SinkscopeError(
            f"--seeds {args.seeds} is not a comma-separated list of integers, e.g. 0,1"
        ) from None
    variants = tuple(v.strip() for v in args.variants.split(",")) if args.variants else None
    r = run_zoo(
        args.out,
        budget=args.budget,
        seeds=seeds,
        variants=variants,
        device=args.device,
        dtype=args.dtype,
        progress=not args.quiet,
        figures=not args.no_figures,
    )
    print(r.markdown())
    print(f"wrote {args.out}/ (zoo.csv, zoo.md, figures, one model directory per run)")
    return 0
