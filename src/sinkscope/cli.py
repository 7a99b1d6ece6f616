"""Command line: ``sinkscope measure | explain | intervene`` (twins of the Python API).

Every user error is one line on stderr and exit code 2; results appear atomically.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from .errors import SinkscopeError, check_number
from .report.formats import FIGURE_FORMATS

DEFAULT_OUT = "sinkscope-out/measure"
DEFAULT_EXPLAIN_OUT = "sinkscope-out/explain"
DEFAULT_INTERVENE_OUT = "sinkscope-out/intervene"


def _parse_band(text: str | None):
    if text is None:
        return None
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise SinkscopeError(f"--layers {text} is not START:STOP (0-based, stop exclusive), e.g. 3:11") from None
    if not 0 <= a < b:
        raise SinkscopeError(f"--layers {text}: START must be at least 0 and below STOP (0-based, stop exclusive), e.g. 3:11")
    return a, b


def _parse_keys(text: str) -> tuple[int, ...]:
    try:
        keys = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SinkscopeError(f"--keys {text} is not a comma-separated list of positions, e.g. 0,1") from None
    if not keys or 0 not in keys:
        raise SinkscopeError(f"--keys {text} must include 0 (the sink position), e.g. 0,1")
    return tuple(dict.fromkeys(keys))


def _common_args(p: argparse.ArgumentParser, default_out: str) -> None:
    """Options every command shares: model, inputs, output, batching, band, figures, progress."""
    p.add_argument("--model", default="default", help="hub id (ORG/NAME[@REVISION]), HF directory, .gguf file, partial safetensors or packaged:NAME (default: the embedded GPT-2-architecture model, offline)")
    _load_args(p)
    _input_args(p)
    _output_args(p, default_out)


def _output_args(p: argparse.ArgumentParser, default_out: str) -> None:
    """Output, batching, band, figures and progress options of a command that writes a result."""
    p.add_argument("--out", default=default_out, help=f"output directory, replaced atomically (default: {default_out})")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--layers", default=None, help="layer band START:STOP, 0-based (default: the paper's 3:11 of 12, scaled)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    _format_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _load_args(p: argparse.ArgumentParser) -> None:
    """Where and in what precision the model is loaded: --device, --dtype, --device-map."""
    from .models.options import DTYPE_HELP

    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--dtype", default="auto", help=DTYPE_HELP)
    p.add_argument("--device-map", default=None, help="auto: accelerate places the layers on every GPU, then CPU memory (needs no --device)")


def _format_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=FIGURE_FORMATS, default="png", help="figure file format: png, svg or pdf (a PDF gets a PNG preview beside it; default png)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="sinkscope", description="Find, explain, break and fix attention sinks.")
    parser.add_argument("--version", action="version", version=f"sinkscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="measure sink strength per example x layer x head")
    _common_args(m, DEFAULT_OUT)
    m.add_argument("--keys", default="0,1", help="key positions to track (default 0,1; 0 = the sink)")
    m.add_argument("--eps", type=float, default=0.3, help="threshold of Gu et al.'s Sink_k^eps (default 0.3)")
    m.add_argument("--baseline", default=None, help="an earlier summary.json: adds %% of its means")

    e = sub.add_parser("explain", help="the sink circuit: score decomposition, EPE, b_Q / key alignment (paper Figs 1-4, 6-8)")
    _common_args(e, DEFAULT_EXPLAIN_OUT)
    e.add_argument("--coords", default=None, help="massive coordinates, e.g. 138,378,447 (default: --coords-rule on EPE_0)")
    e.add_argument("--sigma", type=float, default=3.0, help="massive-coordinate rule: |EPE_0[d]| > mean + SIGMA*std (default 3)")
    e.add_argument("--coords-rule", choices=("paper", "sigma"), default="paper",
                   help="γ's coordinates: paper = the paper's code, mean + SIGMA*std with the sample std, else the top-2 |EPE_0|; sigma = population std, γ split skipped when none passes (default paper)")
    e.add_argument("--weights-only", action="store_true", help="skip the forward-pass analyses")

    v = sub.add_parser("intervene", help="interventions: sink change, relocation and loss cost (paper Table 1, Fig 5)")
    _common_args(v, DEFAULT_INTERVENE_OUT)
    v.add_argument("--preset", default="paper", help="paper: the ten interventions (a)..(j) of Table 1; none: only --edit")
    v.add_argument("--edit", action="append", default=[], metavar="NAME=SPEC", help="a custom intervention, e.g. half_bq=bq:0.5@3:11 or bq:0+skip_mlp (see README)")
    v.add_argument("--coords", default=None, help="massive coordinates for (i) / zero_wk (default: --coords-rule)")
    v.add_argument("--coords-rule", choices=("paper", "sigma"), default=None,
                   help="(i)'s coordinates: paper = top-3 |EPE_0| (the paper's code), sigma = |EPE_0[d]| > mean + SIGMA*std (default: paper under --preset paper without --sigma, else sigma)")
    v.add_argument("--sigma", type=float, default=None, help="the sigma rule's SIGMA (default 3; implies --coords-rule sigma)")
    v.add_argument("--random", choices=("paper", "sinkscope"), default=None,
                   help="(j)'s draw: paper = the paper's code (seed 42 before each example, randint 3 times per layer, repeats allowed); sinkscope = random.Random(--seed), 3 distinct non-massive rows per layer (default paper)")
    v.add_argument("--sentence", default=None, help="the text of the Fig 5 attention grid (default: the opening of A Tale of Two Cities)")
    c = sub.add_parser("compare", help="the sink circuit across models: components, sink per domain, creating block, shared-query share, matching interventions")
    _common_args(c, "sinkscope-out/compare")
    c.add_argument("--models", required=True, help="comma-separated model specs, e.g. default,packaged:smollm2,packaged:qwen2.5-coder-0.5b")
    g = sub.add_parser("mitigate", help="sweep each mitigation's strength 1 -> 0: sink left vs cross-entropy added")
    _common_args(g, "sinkscope-out/mitigate")
    g.add_argument("--models", default=None, help="comma-separated model specs (default: --model)")
    g.add_argument("--strengths", default="1,0.8,0.6,0.4,0.2,0", help="fractions kept, from 1 (no edit) to 0 (default 1,0.8,...,0)")
    g.add_argument("--edits", default="bq,qbar,wk,patch0", help="subset of bq, qbar, wk, patch0")
    w = sub.add_parser("sweep", help="one question along the study's axes: models / checkpoints x lengths x content x seeds, each cell the paper's interventions; cached, resumable, local or Ray")
    _sweep_args(w)
    r = sub.add_parser("reproduce", help="the whole study on one model: cached stages + a self-contained report.html with every figure, Table 1 and paper vs this run")
    _reproduce_args(r)
    t = sub.add_parser("train", help="train a small GPT-2-style model with sink-circuit components switched on/off")
    _train_args(t)
    y = sub.add_parser("dynamics", help="the sink circuit over a training run's kept steps (train --save-at): sink, EPE, alignment, edits, pathways, onset")
    _dynamics_args(y)
    z = sub.add_parser("zoo", help="train every variant (full, no b_Q, rotary, no positions, no MLP, 3 normalisers) and compare their sinks")
    z.add_argument("--budget", choices=("small", "gpu"), default="small", help="small: <= 2 h on a 2-core CPU; gpu: larger models on a CUDA device")
    z.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    z.add_argument("--variants", default=None, help="comma-separated subset of the variants (default: all)")
    z.add_argument("--out", default="sinkscope-out/zoo", help="zoo directory: one run per variant x seed plus zoo.csv / zoo.md / PNGs; reruns skip finished runs")
    z.add_argument("--device", default="cpu")
    z.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default="default", help="comma-separated model specs: hub ids (ORG/NAME@REVISION for training checkpoints), "
                   "HF directories (sinkscope train --save-at checkpoints), .gguf, packaged:NAME (default: default)")
    p.add_argument("--lengths", default="40", help="comma-separated input lengths in tokens (default 40; short texts are joined within their domain)")
    p.add_argument("--content", default="natural", help="comma-separated regimes: natural, random (uniform tokens), repeated (a random half, twice)")
    p.add_argument("--seeds", default="0", help="comma-separated input seeds; 0 is the inputs' own (the paper's) selection (default 0)")
    p.add_argument("--inputs", default="default", help="the natural texts: an --inputs spec as for measure (default: the offline corpus)")
    p.add_argument("--per-domain", type=int, default=None, help="inputs per domain and cell (random / repeated: 3x this many)")
    p.add_argument("--preset", choices=("paper", "none"), default="paper", help="paper: interventions (a)..(j) per cell; none: the baseline sink only")
    p.add_argument("--bos", choices=("auto", "on", "off"), default="auto", help="prepend the tokenizer's BOS token (auto: the model's convention)")
    p.add_argument("--layers", default=None, help="layer band START:STOP, 0-based (default: the paper's 3:11 of 12, scaled)")
    p.add_argument("--batch-size", type=int, default=32)
    _load_args(p)
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="local: sequential, no extra dependency; ray: one task per model (pip install 'sinkscope[ray]')")
    p.add_argument("--address", default=None, help="with --backend ray: an existing cluster (default: a local Ray instance)")
    p.add_argument("--out", required=True, help="sweep directory: cells/ (cached, never recomputed), sweep.csv, table1_models.csv/.md, figures, report.html")
    p.add_argument("--no-figures", action="store_true", help="skip the figures and report.html")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SinkscopeError(f"{flag} {text} is not a comma-separated list of integers, e.g. 0,1,2") from None
    if not vals:
        raise SinkscopeError(f"{flag} is empty; give e.g. {flag} 0,1")
    if len(set(vals)) < len(vals):
        raise SinkscopeError(f"{flag} {text} repeats a value; give each once")
    return vals


def cmd_sweep(args) -> int:
    from .experiments.sweep import SweepConfig, run_sweep

    cfg = SweepConfig(models=tuple(m.strip() for m in args.models.split(",") if m.strip()), lengths=_int_list(args.lengths, "--lengths"),
                      contents=tuple(args.content.split(",")), seeds=_int_list(args.seeds, "--seeds"), inputs=args.inputs,
                      per_domain=args.per_domain, preset=args.preset, bos=args.bos, band=_parse_band(args.layers),
                      batch_size=args.batch_size, device=args.device, dtype=args.dtype, device_map=args.device_map,
                      backend=args.backend, address=args.address)
    r = run_sweep(cfg, args.out, figures=not args.no_figures, progress=not args.quiet)
    print(r.markdown())
    print(f"wrote {args.out}/ (sweep.csv, table1_models.csv, table1_models.md, sweep.json{', figures, report.html' if not args.no_figures else ''}) "
          f"in {r.seconds:.0f} s")
    return 0 if not r.failed else 1


def _bool(text: str) -> bool:
    t = text.lower()
    if t in ("on", "true", "yes", "1"):
        return True
    if t in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not on/off")


def _train_args(p: argparse.ArgumentParser) -> None:
    from .models.switches import NORMALISERS, POSITIONS
    from .training.config import TASKS, TrainConfig

    d = TrainConfig()
    p.add_argument("--out", required=True, help="run directory: checkpoint.pt while training, then a HF model directory")
    p.add_argument("--data", default=d.data, help="default (offline corpus) | text:PATH | jsonl:PATH:FIELD")
    p.add_argument("--query-bias", type=_bool, default=d.query_bias, metavar="on|off", help="learned query bias (off: b_Q fixed at 0)")
    p.add_argument("--positions", default=d.positions, choices=POSITIONS)
    p.add_argument("--mlp", type=_bool, default=d.mlp, metavar="on|off")
    p.add_argument("--normaliser", default=d.normaliser, choices=NORMALISERS)
    p.add_argument("--layers", dest="n_layer", type=int, default=d.n_layer)
    p.add_argument("--width", dest="n_embd", type=int, default=d.n_embd)
    p.add_argument("--heads", dest="n_head", type=int, default=d.n_head)
    p.add_argument("--context", type=int, default=d.context)
    p.add_argument("--vocab", type=int, default=d.vocab, help="BPE vocabulary fitted to the data (default 4096)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--bos", type=_bool, default=d.bos, metavar="on|off", help="start every window with <|endoftext|>")
    p.add_argument("--synthetic", type=float, default=d.synthetic, help="share of training windows from a synthetic task on reserved tokens (default 0)")
    p.add_argument("--task", default=d.task, choices=TASKS, help="the synthetic task: repeat (induction) or backcopy (bigram-backcopy)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="steps between validation loss + sink readouts (0: never)")
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    p.add_argument("--save-at", default=None, metavar="STEPS",
                   help="keep the weights of these steps (e.g. 0,100,200,400; 0 = the initial weights) as HF directories in "
                        "OUT/checkpoints/step-NNNNNN/, for sinkscope dynamics")
    p.add_argument("--tokenizer", default=None, help="a directory with a tokenizer to reuse instead of fitting one")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--force", action="store_true", help="start over in an existing --out")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _dynamics_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a sinkscope train directory whose checkpoints/ holds the kept steps (train --save-at)")
    src.add_argument("--checkpoints", help="comma-separated model specs (HF directories, hub ids), one per training step")
    p.add_argument("--steps", default=None, help="the training step of each --checkpoints entry (default: the step each recorded)")
    p.add_argument("--threshold", type=float, default=None, help="sink level that marks the onset (default: 2x the uniform level)")
    _load_args(p)
    _input_args(p)
    p.set_defaults(model=None)
    _output_args(p, "sinkscope-out/dynamics")


def _reproduce_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="hub id (ORG/NAME[@REVISION]), HF directory, .gguf, partial safetensors, packaged:NAME or default (default: gpt2 from the hub when reachable, else the embedded model)")
    _load_args(p)
    _input_args(p)
    p.set_defaults(inputs=None)
    p.add_argument("--out", default="sinkscope-out/reproduce", help="run directory: stages/ (cached results), report.html, run.json (default: sinkscope-out/reproduce)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--layers", default=None, help="layer band START:STOP, 0-based (default: the paper's 3:11 of 12, scaled)")
    p.add_argument("--coords", default=None, help="massive coordinates for γ, (i) and the W_K mitigation (default: the paper's rules on EPE_0: top-3 for (i) and the W_K mitigation, mean + SIGMA*std for γ)")
    p.add_argument("--sigma", type=float, default=3.0, help="γ's massive-coordinate rule: |EPE_0[d]| > mean + SIGMA*std (default 3)")
    p.add_argument("--strengths", default="1,0.5,0", help="mitigation strengths kept, 1 = unedited (default 1,0.5,0)")
    p.add_argument("--edits", default="bq,qbar,wk,patch0", help="mitigation edits (default bq,qbar,wk,patch0)")
    p.add_argument("--sentence", default=None, help="the text of the Fig 5 attention grid (default: the opening of A Tale of Two Cities)")
    p.add_argument("--skip", default="", help="comma-separated stages to leave out (measure, circuit_weights, ...; an unknown name lists them all)")
    p.add_argument("--force", action="store_true", help="recompute every stage even if a cached result matches")
    _format_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _input_args(p: argparse.ArgumentParser) -> None:
    from .data.spec import SPEC_HELP

    p.add_argument("--inputs", default="default", help=f"{SPEC_HELP} (default: the offline corpus)")
    p.add_argument("--max-tokens", type=int, default=40, help="tokens per input; shorter texts are skipped (default 40)")
    p.add_argument("--short", choices=("skip", "keep"), default="skip", help="texts under --max-tokens tokens: skip and count them (default) or keep them at their own length")
    p.add_argument("--per-domain", type=int, default=None, help="keep at most N inputs per domain (default: all; 100 for the default corpus)")
    p.add_argument("--seed", type=int, default=0, help="seed of the default corpus (and of intervene's (j) with --random sinkscope)")
    p.add_argument("--bos", nargs="?", const="on", default="auto", choices=("auto", "on", "off"),
                   help="prepend the tokenizer's BOS token; auto (default): only for models sinkscope trained with a BOS first token (the paper uses none)")


def _options(args, *, paper: bool = False):
    """The shared options of a command, as the experiments take them, checked. ``paper``: the
    study's runs (``intervene --preset paper``, ``reproduce``) load in float32 unless --dtype says otherwise."""
    from .experiments.run import RunOptions
    from .models.options import run_dtype

    opts = RunOptions(model=args.model, device=args.device, dtype=args.dtype, device_map=args.device_map, inputs=args.inputs,
                      max_tokens=args.max_tokens, short=args.short, per_domain=args.per_domain, seed=args.seed, bos=args.bos,
                      batch_size=args.batch_size, band=_parse_band(args.layers), coords=_parse_coords(getattr(args, "coords", None)),
                      k_sigma=check_number("--sigma", 3.0 if getattr(args, "sigma", None) is None else args.sigma, 0.0, 1e6),
                      coords_rule=getattr(args, "coords_rule", None) or "paper", out=args.out,
                      figures=not getattr(args, "no_figures", False), progress=not args.quiet)
    opts.check()
    opts.dtype = run_dtype(opts.dtype, paper)
    return opts


def _run_one(config, args, *, paper: bool = False) -> int:
    """One command = one stage: run it, print its text and what it wrote."""
    from .experiments.run import run_stage

    return _print(run_stage(config, _options(args, paper=paper)), args.out)


def _run_models(config, args, specs: str) -> int:
    """A stage over several models, one at a time, into one result."""
    from .experiments.run import run_models

    return _print(run_models(config, _options(args), [m.strip() for m in specs.split(",") if m.strip()]), args.out)


def _print(ran, out: str) -> int:
    print("\n".join(ran.loaded))
    print(ran.result.format())
    print(ran.wrote(out))
    return 0


def cmd_measure(args) -> int:
    from .experiments.measure import MeasureConfig

    return _run_one(MeasureConfig(keys=_parse_keys(args.keys), eps=args.eps, baseline=args.baseline), args)


def cmd_explain(args) -> int:
    from .experiments.explain import ExplainConfig

    return _run_one(ExplainConfig(forward=not args.weights_only), args)


def cmd_intervene(args) -> int:
    from .experiments.intervene import InterveneConfig, cli_settings

    args.coords_rule, args.sigma, draw = cli_settings(args.preset, args.coords_rule, args.sigma, args.random)
    return _run_one(InterveneConfig(preset=args.preset, edits=tuple(args.edit), seed=args.seed, random=draw, sentence=args.sentence,
                                    max_tokens=args.max_tokens), args, paper=args.preset == "paper")


def cmd_compare(args) -> int:
    from .experiments.compare import CompareConfig

    return _run_models(CompareConfig(seed=args.seed), args, args.models)


def cmd_mitigate(args) -> int:
    from .experiments.mitigate import MitigateConfig

    config = MitigateConfig(strengths=tuple(_parse_strengths(args.strengths)), edits=_parse_edits(args.edits))
    return _run_models(config, args, args.models or args.model)


def _parse_coords(text: str | None):
    if text is None:
        return None
    try:
        coords = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise SinkscopeError(f"--coords {text} is not a comma-separated list of residual coordinates, e.g. 138,378,447") from None
    if not coords:
        raise SinkscopeError("--coords is empty; give coordinates such as 138,378,447")
    return coords


def _parse_strengths(text: str) -> list[float]:
    try:
        given = {float(x) for x in text.split(",") if x.strip()}
        strengths = sorted(given | {1.0}, reverse=True)
    except ValueError:
        raise SinkscopeError(f"--strengths {text} is not a comma-separated list of numbers in [0, 1]") from None
    if not given:
        raise SinkscopeError(f"--strengths {text!r} names no strength; e.g. 1,0.5,0")
    if any(not 0 <= s <= 1 for s in strengths):  # NaN fails this too
        raise SinkscopeError(f"--strengths {text}: every strength must lie in [0, 1] (1 = unedited, 0 = removed)")
    return strengths


def _parse_edits(text: str) -> tuple[str, ...]:
    from .experiments.mitigate import EDITS

    edits = tuple(e.strip() for e in text.split(",") if e.strip())
    if not edits or any(e not in EDITS for e in edits):
        raise SinkscopeError(f"--edits {text}: choose from {', '.join(EDITS)}")
    return edits


def cmd_reproduce(args) -> int:
    from .experiments.reproduce import Settings, reproduce, resolve_defaults

    from .experiments.run import load

    skip = tuple(x.strip() for x in args.skip.split(",") if x.strip())
    opts = _options(args, paper=True)  # every option checked once, before the hub probe and the model
    settings = Settings(band=opts.band, coords=opts.coords, k_sigma=opts.k_sigma, seed=opts.seed, batch_size=opts.batch_size,
                        strengths=tuple(_parse_strengths(args.strengths)), edits=_parse_edits(args.edits), sentence=args.sentence,
                        max_tokens=opts.max_tokens, skip=skip)
    t0 = time.perf_counter()
    opts.model, opts.inputs, notes = resolve_defaults(args.model, args.inputs)
    for n in notes:
        print(f"sinkscope: {n[0].lower()}{n[1:].rstrip('.')}", file=sys.stderr)
    model, inputs = load(opts, need_forward=False, kind="reproduce")
    command = "sinkscope " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("sinkscope") else ""
    try:
        res = reproduce(model, inputs, args.out, settings=settings, force=args.force, progress=not args.quiet, notes=notes, run_info={"command": command})
    except KeyboardInterrupt:
        print(f"sinkscope: interrupted; finished stages are kept under {args.out}/stages and the same command resumes from them", file=sys.stderr)
        return 130
    for o in res.stages:
        extra = o.reason if o.status in ("skipped", "not requested") else f"{o.seconds:.1f} s"
        print(f"  {o.name:<16}{o.status:<14}{extra}")
    print(f"report: {res.report} ({time.perf_counter() - t0:.0f} s in all; {sum(o.status == 'ran' for o in res.stages)} stages computed, {sum(o.status == 'cached' for o in res.stages)} reused)")
    return 0


def cmd_train(args) -> int:
    from dataclasses import fields

    from .training import TrainConfig, read_tokenizer, train

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)})
    tok = read_tokenizer(args.tokenizer) if args.tokenizer else None
    command = "sinkscope " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("sinkscope") else ""
    r = train(cfg, args.out, resume=args.resume, force=args.force, tokenizer=tok, progress=not args.quiet, command=command, device=args.device,
              save_at=args.save_at)
    f = r["final"]
    sink = f"; BOS attention (layer band, T=40) {f['sink']:.3f}" if f["sink"] is not None else ""
    print(f"trained {cfg.steps} steps in {r['seconds']:.0f} s: validation loss {f['val_loss']:.3f}{sink}")
    print(f"wrote {args.out}/ (HF model directory; load it with --model {args.out})")
    if r["checkpoints"]:
        print(f"kept steps {','.join(map(str, r['save_at']))} in {args.out}/checkpoints/ (sinkscope dynamics --run {args.out})")
    return 0


def cmd_dynamics(args) -> int:
    from .experiments.dynamics import run_checkpoints, run_dynamics

    opts = _options(args)
    steps = None
    if args.steps is not None:
        if args.run:
            raise SinkscopeError("--steps goes with --checkpoints; a --run's checkpoints record their own steps")
        try:
            steps = [int(x) for x in args.steps.split(",") if x.strip()]
        except ValueError:
            raise SinkscopeError(f"--steps {args.steps} is not a comma-separated list of training steps, e.g. 0,100,200") from None
    specs = run_checkpoints(args.run) if args.run else [c.strip() for c in args.checkpoints.split(",") if c.strip()]
    return _print(run_dynamics(specs, opts, steps=steps, threshold=args.threshold), args.out)


def cmd_zoo(args) -> int:
    from .experiments.zoo import run_zoo

    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError:
        raise SinkscopeError(f"--seeds {args.seeds} is not a comma-separated list of integers, e.g. 0,1") from None
    variants = tuple(v.strip() for v in args.variants.split(",")) if args.variants else None
    r = run_zoo(args.out, budget=args.budget, seeds=seeds, variants=variants, device=args.device, progress=not args.quiet)
    print(r.markdown())
    print(f"wrote {args.out}/ (zoo.csv, zoo.md, figures, one model directory per run)")
    return 0


COMMANDS = {
    "measure": cmd_measure, "explain": cmd_explain, "intervene": cmd_intervene, "compare": cmd_compare,
    "mitigate": cmd_mitigate, "reproduce": cmd_reproduce, "train": cmd_train, "zoo": cmd_zoo, "sweep": cmd_sweep,
    "dynamics": cmd_dynamics,
}


class Terminated(BaseException):
    """SIGTERM, raised like a Ctrl-C so that every temp directory is cleaned up on the way out."""


def _on_sigterm(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Parse, run one command, and turn every way it can end into an exit code: 0; 2 with one
    ``sinkscope: error:`` line for a user error; 130 / 143 for Ctrl-C / SIGTERM (temp files
    removed); 1 with one line for an internal error (``SINKSCOPE_DEBUG=1`` shows the traceback)."""
    import signal

    from .io import signal_handlers

    with signal_handlers(_on_sigterm, signal.SIGTERM):
        return _run(argv)


def _run(argv: list[str] | None) -> int:
    try:
        parser = build_parser()  # imports happen here, inside the handlers below
        args = parser.parse_args(argv)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from .report.formats import figure_format

        with figure_format(getattr(args, "format", None)):  # the run's figure format, set once for every command
            return COMMANDS[args.command](args)
    except SinkscopeError as e:
        print(f"sinkscope: error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as e:
        code, what = (143, "terminated") if isinstance(e, Terminated) else (130, "interrupted")
        print(f"sinkscope: {what}; {_interrupted_note(argv)}", file=sys.stderr)
        return code
    except BrokenPipeError:  # the reader went away (``sinkscope ... | head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:
        if os.environ.get("SINKSCOPE_DEBUG"):
            raise
        text = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        print(f"sinkscope: internal error: {type(e).__name__}{': ' + text if text else ''} "
              "(a bug in sinkscope; rerun with SINKSCOPE_DEBUG=1 for the traceback and report it)", file=sys.stderr)
        return 1


def _interrupted_note(argv) -> str:
    """What an interrupted command leaves: train keeps its last checkpoint, the rest nothing."""
    from pathlib import Path

    argv = sys.argv[1:] if argv is None else argv
    outs = [b for a, b in zip(argv, argv[1:]) if a == "--out"] + [a[6:] for a in argv if a.startswith("--out=")]
    if argv[:1] == ["train"] and outs:
        ckpt = Path(outs[-1]) / "checkpoint.pt"
        if ckpt.exists():
            return f"the last checkpoint is kept in {ckpt}; add --resume to the same command to continue"
    if argv[:1] == ["zoo"]:
        return "finished runs and checkpoints are kept; the same command resumes"
    if argv[:1] == ["reproduce"]:
        return "finished stages are kept and the same command resumes from them"
    return "nothing half-written was left (--out holds a complete result or none)"


if __name__ == "__main__":
    sys.exit(main())
