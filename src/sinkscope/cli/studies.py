"""The studies' commands (``reproduce``, ``sweep``, ``dynamics``): their parsers and handlers;
``train`` and ``zoo`` are in :mod:`.train` (re-exported here). The stages' commands are built
from the registry (``stage_commands``)."""

from __future__ import annotations

import argparse
import sys
import time

from ..errors import SinkscopeError
from ..parsing import int_list, parse_band, spec_list
from . import flags
from .train import _bool as _bool  # importable from here as before the split
from .train import _train_args as _train_args
from .train import _zoo_args as _zoo_args
from .train import cmd_train as cmd_train
from .train import cmd_zoo as cmd_zoo

SWEEP_EXAMPLE = (
    "sinkscope sweep --models default --lengths 24,40 --per-domain 5 --out sinkscope-out/sweep"
)
SWEEP_NOTE = "Rerun the same command with more --lengths or --seeds: finished cells are reused."


def _sweep_args(p: argparse.ArgumentParser) -> None:
    flags.describe(p, SWEEP_EXAMPLE, note=SWEEP_NOTE)
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
        help="comma-separated regimes: natural, random (uniform tokens), repeated (a random half, "
        "twice) (default: natural)",
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
        help="inputs per domain and cell (random / repeated: 3x this many) (default: all)",
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
        help="prepend the tokenizer's BOS token (auto: the model's convention) (default: auto)",
    )
    p.add_argument("--layers", default=None, help=flags.LAYERS_HELP)
    p.add_argument(
        "--batch-size", type=int, default=32, help="inputs per forward pass (default 32)"
    )
    flags.load_args(p)
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: sequential, no extra dependency; ray: one task per model "
        "(pip install 'sinkscope[ray]') (default: local)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="with --backend ray: an existing cluster (default: a local Ray instance)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="sweep directory (required): cells/ (cached, never recomputed), sweep.csv, "
        "table1_models.csv/.md, figures, report.html",
    )
    flags.figure_args(p, "write neither the figures nor report.html")
    flags.quiet_arg(p)


def cmd_sweep(args: argparse.Namespace) -> int:
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


def _dynamics_args(p: argparse.ArgumentParser) -> None:
    flags.describe(
        p,
        "sinkscope dynamics --run sinkscope-out/train --per-domain 10",
        note="--run takes a sinkscope train directory trained with --save-at (see sinkscope "
        "train --help).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--run",
        help="a sinkscope train directory whose checkpoints/ holds the kept steps (train "
        "--save-at); give it or --checkpoints",
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
    flags.describe(
        p,
        "sinkscope reproduce --model default --per-domain 10",
        note="Rerun the same command to resume: finished stages are reused.",
    )
    p.add_argument(
        "--model",
        default=None,
        help="hub id (ORG/NAME[@REVISION]), HF directory, .gguf, partial safetensors, packaged:NAME or default (default: gpt2 from the hub when reachable, else the embedded model)",
    )
    flags.load_args(p)
    flags.input_args(p)
    p.set_defaults(inputs=None)
    flags.out_args(
        p,
        "sinkscope-out/reproduce",
        "run directory: stages/ (cached results), report.html, run.json",
        force="let --out's results give way to this run's settings (without it a folder of "
        "another run is refused): stages these settings touch are recomputed, the rest reused",
    )
    p.add_argument(
        "--recompute",
        action="store_true",
        help="recompute every stage even if a cached result matches (default: reuse them)",
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
        help="comma-separated stages to leave out (measure, circuit_weights, ...; an unknown "
        "name lists them all) (default: none)",
    )
    flags.format_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_reproduce(args: argparse.Namespace) -> int:
    import dataclasses

    from ..runs import point_latest
    from ..signals import Interrupted
    from ..stages.runner import load, prepare, settle_out
    from ..studies.reproduce_plan import Settings, reproduce_options, resolve_defaults

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
    run = {k: v for k, v in dataclasses.asdict(settings).items() if k != "skip"}
    settle_out("reproduce", run, opts)  # without --out: this run's own folder
    for n in notes:
        print(f"sinkscope: {n[0].lower()}{n[1:].rstrip('.')}", file=sys.stderr)
    model, inputs = load(opts, need_forward=False, kind="reproduce")  # checks first, then torch
    from ..studies.reproduce import reproduce

    command = flags.command_line(sys.argv[0] if sys.argv else "", sys.argv[1:])
    try:
        res = reproduce(
            model,
            inputs,
            opts.out,
            settings=settings,
            force=args.recompute,
            replace=args.force,
            run=opts.run,
            progress=not args.quiet,
            notes=notes,
            run_info={"command": command},
        )
    except KeyboardInterrupt as e:
        raise Interrupted(
            f"finished stages are kept under {opts.out}/stages and the same command resumes "
            "from them"
        ) from e
    for o in res.stages:
        extra = o.reason if o.status in ("skipped", "not requested") else f"{o.seconds:.1f} s"
        print(f"  {o.name:<16}{o.status:<14}{extra}")
    if opts.out_root is not None:
        point_latest(opts.out)
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


def cmd_dynamics(args: argparse.Namespace) -> int:
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
    print(ran.wrote())
    return 0
