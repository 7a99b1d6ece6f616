"""The studies' commands (``reproduce``, ``sweep``, ``train``, ``dynamics``, ``zoo``): their
parsers and handlers. The stages' commands are built from the registry (``stage_commands``)."""

from __future__ import annotations

import argparse
import sys
import time

from ..errors import SinkscopeError
from ..parsing import int_list, parse_band, spec_list
from . import flags


def _sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models",
        default="default",
        help="comma-separated model specs: hub ids (ORG/NAME@REVISION for training checkpoints), "
        "HF directories (sinkscope train --save-at checkpoints), .gguf, packaged:NAME (default: default)",
    )
    p.add_argument(
        "--lengths",
        default="40",
        help="comma-separated input lengths in tokens (default 40; short texts are joined within their domain)",
    )
    p.add_argument(
        "--content",
        default="natural",
        help="comma-separated regimes: natural, random (uniform tokens), repeated (a random half, twice)",
    )
    p.add_argument(
        "--seeds",
        default="0",
        help="comma-separated input seeds; 0 is the inputs' own (the paper's) selection (default 0)",
    )
    p.add_argument(
        "--inputs",
        default="default",
        help="the natural texts: an --inputs spec as for measure (default: the offline corpus)",
    )
    p.add_argument(
        "--per-domain",
        type=int,
        default=None,
        help="inputs per domain and cell (random / repeated: 3x this many)",
    )
    from ..interventions.presets import PRESETS

    p.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default="paper",
        help="per cell: "
        + "; ".join(f"{p.name} = {p.help}" for p in PRESETS.values())
        + " (default paper)",
    )
    p.add_argument(
        "--bos",
        choices=("auto", "on", "off"),
        default="auto",
        help="prepend the tokenizer's BOS token (auto: the model's convention)",
    )
    p.add_argument(
        "--layers",
        default=None,
        help="layer band START:STOP, 0-based (default: the paper's 3:11 of 12, scaled)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    flags.load_args(p)
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: sequential, no extra dependency; ray: one task per model (pip install 'sinkscope[ray]')",
    )
    p.add_argument(
        "--address",
        default=None,
        help="with --backend ray: an existing cluster (default: a local Ray instance)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="sweep directory: cells/ (cached, never recomputed), sweep.csv, table1_models.csv/.md, figures, report.html",
    )
    p.add_argument("--no-figures", action="store_true", help="skip the figures and report.html")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_sweep(args) -> int:
    from ..studies.sweep import SweepConfig, run_sweep

    cfg = SweepConfig(
        models=spec_list(args.models),
        lengths=int_list(args.lengths, "--lengths"),
        contents=tuple(args.content.split(",")),
        seeds=int_list(args.seeds, "--seeds"),
        inputs=args.inputs,
        per_domain=args.per_domain,
        preset=args.preset,
        bos=args.bos,
        band=parse_band(args.layers),
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        device_map=args.device_map,
        backend=args.backend,
        address=args.address,
    )
    r = run_sweep(cfg, args.out, figures=not args.no_figures, progress=not args.quiet)
    print(r.markdown())
    print(
        f"wrote {args.out}/ (sweep.csv, table1_models.csv, table1_models.md, sweep.json{', figures, report.html' if not args.no_figures else ''}) "
        f"in {r.seconds:.0f} s"
    )
    return 0 if not r.failed else 1


def _bool(text: str) -> bool:
    t = text.lower()
    if t in ("on", "true", "yes", "1"):
        return True
    if t in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not on/off")


def _train_args(p: argparse.ArgumentParser) -> None:
    from ..models.switches import NORMALISERS, POSITIONS
    from ..training.config import TASKS, TrainConfig

    d = TrainConfig()
    p.add_argument(
        "--out",
        required=True,
        help="run directory: checkpoint.pt while training, then a HF model directory",
    )
    p.add_argument(
        "--data", default=d.data, help="default (offline corpus) | text:PATH | jsonl:PATH:FIELD"
    )
    p.add_argument(
        "--query-bias",
        type=_bool,
        default=d.query_bias,
        metavar="on|off",
        help="learned query bias (off: b_Q fixed at 0)",
    )
    p.add_argument("--positions", default=d.positions, choices=POSITIONS)
    p.add_argument("--mlp", type=_bool, default=d.mlp, metavar="on|off")
    p.add_argument("--normaliser", default=d.normaliser, choices=NORMALISERS)
    p.add_argument("--layers", dest="n_layer", type=int, default=d.n_layer)
    p.add_argument("--width", dest="n_embd", type=int, default=d.n_embd)
    p.add_argument("--heads", dest="n_head", type=int, default=d.n_head)
    p.add_argument("--context", type=int, default=d.context)
    p.add_argument(
        "--vocab",
        type=int,
        default=d.vocab,
        help="BPE vocabulary fitted to the data (default 4096)",
    )
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument(
        "--bos",
        type=_bool,
        default=d.bos,
        metavar="on|off",
        help="start every window with <|endoftext|>",
    )
    p.add_argument(
        "--synthetic",
        type=float,
        default=d.synthetic,
        help="share of training windows from a synthetic task on reserved tokens (default 0)",
    )
    p.add_argument(
        "--task",
        default=d.task,
        choices=TASKS,
        help="the synthetic task: repeat (induction) or backcopy (bigram-backcopy)",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--eval-every",
        type=int,
        default=d.eval_every,
        help="steps between validation loss + sink readouts (0: never)",
    )
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
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


def _dynamics_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--run",
        help="a sinkscope train directory whose checkpoints/ holds the kept steps (train --save-at)",
    )
    src.add_argument(
        "--checkpoints",
        help="comma-separated model specs (HF directories, hub ids), one per training step",
    )
    p.add_argument(
        "--steps",
        default=None,
        help="the training step of each --checkpoints entry (default: the step each recorded)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="sink level that marks the onset (default: 2x the uniform level)",
    )
    flags.load_args(p)
    flags.input_args(p)
    p.set_defaults(model=None)
    flags.output_args(p, "sinkscope-out/dynamics")


def _reproduce_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="hub id (ORG/NAME[@REVISION]), HF directory, .gguf, partial safetensors, packaged:NAME or default (default: gpt2 from the hub when reachable, else the embedded model)",
    )
    flags.load_args(p)
    flags.input_args(p)
    p.set_defaults(inputs=None)
    p.add_argument(
        "--out",
        default="sinkscope-out/reproduce",
        help="run directory: stages/ (cached results), report.html, run.json (default: sinkscope-out/reproduce)",
    )
    p.add_argument(
        "--batch-size", type=int, default=32, help="inputs per forward pass (default 32)"
    )
    p.add_argument("--layers", default=None, help=flags.LAYERS_HELP)
    p.add_argument(
        "--coords",
        default=None,
        help="massive coordinates for γ, (i) and the W_K mitigation (default: the paper's rules on EPE_0: top-3 for (i) and the W_K mitigation, mean + SIGMA*std for γ)",
    )
    p.add_argument(
        "--sigma",
        type=float,
        default=3.0,
        help="γ's massive-coordinate rule: |EPE_0[d]| > mean + SIGMA*std (default 3)",
    )
    from ..registry import steps
    from .stage_commands import add_config_options

    seen: set = set()
    for cls in dict.fromkeys(cls for _, cls in steps()):  # the stages' flags reproduce offers
        add_config_options(p, cls, reproduce=True, seen=seen)
    p.add_argument(
        "--skip",
        default="",
        help="comma-separated stages to leave out (measure, circuit_weights, ...; an unknown name lists them all)",
    )
    p.add_argument(
        "--force", action="store_true", help="recompute every stage even if a cached result matches"
    )
    flags.format_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_reproduce(args) -> int:
    from ..stages.runner import load, prepare
    from ..studies.reproduce import Settings, reproduce, reproduce_options, resolve_defaults

    skip = tuple(x.strip() for x in args.skip.split(",") if x.strip())
    opts = flags.run_options(args)
    prepare(_PaperRun(), opts)  # every option checked once, before the hub probe and the model
    options = {}
    for name, (cls, opt, _default) in reproduce_options().items():
        v = getattr(args, opt.dest)
        v = tuple(v) if isinstance(v, list) else v
        options[name] = opt.value(v)
    settings = Settings(
        band=opts.band,
        coords=opts.coords,
        k_sigma=opts.k_sigma,
        seed=opts.seed,
        batch_size=opts.batch_size,
        max_tokens=opts.max_tokens,
        skip=skip,
        options=options,
    )
    t0 = time.perf_counter()
    opts.model, opts.inputs, notes = resolve_defaults(args.model, args.inputs)
    for n in notes:
        print(f"sinkscope: {n[0].lower()}{n[1:].rstrip('.')}", file=sys.stderr)
    model, inputs = load(opts, need_forward=False, kind="reproduce")
    command = flags.command_line(sys.argv[0] if sys.argv else "", sys.argv[1:])
    try:
        res = reproduce(
            model,
            inputs,
            args.out,
            settings=settings,
            force=args.force,
            progress=not args.quiet,
            notes=notes,
            run_info={"command": command},
        )
    except KeyboardInterrupt:
        print(
            f"sinkscope: interrupted; finished stages are kept under {args.out}/stages and the "
            "same command resumes from them",
            file=sys.stderr,
        )
        return 130
    for o in res.stages:
        extra = o.reason if o.status in ("skipped", "not requested") else f"{o.seconds:.1f} s"
        print(f"  {o.name:<16}{o.status:<14}{extra}")
    print(
        f"report: {res.report} ({time.perf_counter() - t0:.0f} s in all; "
        f"{sum(o.status == 'ran' for o in res.stages)} stages computed, "
        f"{sum(o.status == 'cached' for o in res.stages)} reused)"
    )
    return 0


class _PaperRun:
    """reproduce runs the study: the paper preset's dtype (float32 unless --dtype says)."""

    def check(self) -> None:
        pass

    def settle(self, opts) -> None:
        from ..interventions.presets import get_preset

        opts.dtype = get_preset("paper").dtype(opts.dtype)


def cmd_train(args) -> int:
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


def cmd_dynamics(args) -> int:
    from ..studies.dynamics import run_checkpoints, run_dynamics

    opts = flags.run_options(args)
    opts.check()
    steps = None
    if args.steps is not None:
        if args.run:
            raise SinkscopeError(
                "--steps goes with --checkpoints; a --run's checkpoints record their own steps"
            )
        try:
            steps = [int(x) for x in args.steps.split(",") if x.strip()]
        except ValueError:
            raise SinkscopeError(
                f"--steps {args.steps} is not a comma-separated list of training steps, e.g. 0,100,200"
            ) from None
    specs = (
        run_checkpoints(args.run)
        if args.run
        else [c.strip() for c in args.checkpoints.split(",") if c.strip()]
    )
    ran = run_dynamics(specs, opts, steps=steps, threshold=args.threshold)
    print("\n".join(ran.loaded))
    print(ran.result.format())
    print(ran.wrote(args.out))
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
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_zoo(args) -> int:
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
        progress=not args.quiet,
    )
    print(r.markdown())
    print(f"wrote {args.out}/ (zoo.csv, zoo.md, figures, one model directory per run)")
    return 0
