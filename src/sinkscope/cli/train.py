"""The training commands: ``train`` (one small model, each sink-circuit component switchable)
and ``zoo`` (every variant x seed, compared). Torch-free at import: the options come from
:mod:`sinkscope.training.config` and :mod:`sinkscope.models.switches`."""

from __future__ import annotations

import argparse
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


def _config_flags() -> tuple[tuple[str, str, object, str | None], ...]:
    """``train``'s options that set a :class:`TrainConfig` field, in ``--help`` order: ``(flag,
    field, kind, help)``; ``kind`` is the value's type, or a tuple of its choices (None: text)."""
    from ..models.switches import NORMALISERS, POSITIONS
    from ..training.config import TASKS

    return (
        ("--data", "data", None, "default (offline corpus) | text:PATH | jsonl:PATH:FIELD"),
        ("--query-bias", "query_bias", _bool, "learned query bias (off: b_Q fixed at 0)"),
        ("--positions", "positions", POSITIONS, None),
        ("--mlp", "mlp", _bool, None),
        ("--normaliser", "normaliser", NORMALISERS, None),
        ("--layers", "n_layer", int, None),
        ("--width", "n_embd", int, None),
        ("--heads", "n_head", int, None),
        ("--context", "context", int, None),
        ("--vocab", "vocab", int, "BPE vocabulary fitted to the data (default 4096)"),
        ("--steps", "steps", int, None),
        ("--batch", "batch", int, None),
        ("--lr", "lr", float, None),
        ("--weight-decay", "weight_decay", float, None),
        ("--warmup", "warmup", int, None),
        ("--bos", "bos", _bool, "start every window with <|endoftext|>"),
        (
            "--synthetic",
            "synthetic",
            float,
            "share of training windows from a synthetic task on reserved tokens (default 0)",
        ),
        (
            "--task",
            "task",
            TASKS,
            "the synthetic task: repeat (induction) or backcopy (bigram-backcopy)",
        ),
        ("--seed", "seed", int, None),
        (
            "--eval-every",
            "eval_every",
            int,
            "steps between validation loss + sink readouts (0: never)",
        ),
        ("--ckpt-every", "ckpt_every", int, None),
    )


def _train_args(p: argparse.ArgumentParser) -> None:
    """``sinkscope train``'s options: ``--out``, the run's settings (defaults from
    :class:`TrainConfig`), then what to keep, reuse or resume."""
    from ..training.config import TrainConfig

    d = TrainConfig()
    p.add_argument(
        "--out",
        required=True,
        help="run directory: checkpoint.pt while training, then a HF model directory",
    )
    for flag, field, kind, text in _config_flags():
        kw: dict = {"choices": kind} if isinstance(kind, tuple) else {"type": kind}
        if kind is _bool:
            kw["metavar"] = "on|off"
        p.add_argument(flag, dest=field, default=getattr(d, field), help=text, **kw)
    p.add_argument(
        "--save-at",
        default=None,
        metavar="STEPS",
        help="keep the weights of these steps (e.g. 0,100,200,400; 0 = the initial weights) as HF directories in "
        "OUT/checkpoints/step-NNNNNN/, for sinkscope dynamics",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        help="a directory with a tokenizer to reuse instead of fitting one",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    p.add_argument("--force", action="store_true", help="start over in an existing --out")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_train(args: argparse.Namespace) -> int:
    """Run ``sinkscope train``: build the :class:`TrainConfig` from the options and train."""
    from dataclasses import fields

    from ..training import TrainConfig, read_tokenizer, train

    cfg = TrainConfig(
        **{f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    )
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
    p.add_argument(
        "--budget",
        choices=("small", "gpu"),
        default="small",
        help="small: <= 2 h on a 2-core CPU; gpu: larger models on a CUDA device",
    )
    p.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    p.add_argument(
        "--variants", default=None, help="comma-separated subset of the variants (default: all)"
    )
    p.add_argument(
        "--out",
        default="sinkscope-out/zoo",
        help="zoo directory: one run per variant x seed plus zoo.csv / zoo.md / PNGs; reruns skip finished runs",
    )
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    from ..models.options import DTYPE_HELP

    p.add_argument("--dtype", default="auto", help="the analyses' dtype: " + DTYPE_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


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
    )
    print(r.markdown())
    print(f"wrote {args.out}/ (zoo.csv, zoo.md, figures, one model directory per run)")
    return 0
