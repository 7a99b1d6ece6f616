"""The flags that every stage (and most studies) share, defined once, and the RunOptions they
become. Torch-free: ``sinkscope --help`` and every argument check run before torch loads."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..parsing import parse_band, parse_coords
from ..report.formats import FIGURE_FORMATS

if TYPE_CHECKING:
    from typing import Any

    from ..stages.runner import RunOptions

MODEL_HELP = (
    "hub id (ORG/NAME[@REVISION]), HF directory, .gguf file, partial safetensors or "
    "packaged:NAME (default: the embedded GPT-2-architecture model, offline)"
)
LAYERS_HELP = "layer band START:STOP, 0-based (default: the paper's 3:11 of 12, scaled)"


def model_args(p: argparse.ArgumentParser, *, multi: bool | str = False) -> None:
    """``--model`` (and, for a stage over several models, ``--models``: ``multi="required"``
    makes it required)."""
    p.add_argument("--model", default="default", help=MODEL_HELP)
    if multi:
        p.add_argument(
            "--models",
            default=None,
            required=multi == "required",
            help="comma-separated model specs, e.g. default,packaged:smollm2,"
            "packaged:qwen2.5-coder-0.5b" + ("" if multi == "required" else " (default: --model)"),
        )


def load_args(p: argparse.ArgumentParser) -> None:
    """Where and in what precision the model is loaded: --device, --dtype, --device-map."""
    from ..models.options import DTYPE_HELP

    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--dtype", default="auto", help=DTYPE_HELP)
    p.add_argument(
        "--device-map",
        default=None,
        help="auto: accelerate places the layers on every GPU, then CPU memory (needs no --device)",
    )


def input_args(p: argparse.ArgumentParser) -> None:
    from ..data.spec import SPEC_HELP

    p.add_argument("--inputs", default="default", help=f"{SPEC_HELP} (default: the offline corpus)")
    p.add_argument(
        "--max-tokens",
        type=int,
        default=40,
        help="tokens per input; shorter texts are skipped (default 40)",
    )
    p.add_argument(
        "--short",
        choices=("skip", "keep"),
        default="skip",
        help="texts under --max-tokens tokens: skip and count them (default) or keep "
        "them at their own length",
    )
    p.add_argument(
        "--per-domain",
        type=int,
        default=None,
        help="keep at most N inputs per domain (default: all; 100 for the default corpus)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the default corpus (and of "
        "intervene's (j) with --random sinkscope) (default 0)",
    )
    p.add_argument(
        "--bos",
        nargs="?",
        const="on",
        default="auto",
        choices=("auto", "on", "off"),
        help="prepend the tokenizer's BOS token; auto (default): only for models "
        "sinkscope trained with a BOS first token (the paper uses none)",
    )


def format_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        choices=FIGURE_FORMATS,
        default="png",
        help="figure file format: png, svg or pdf (a PDF gets a PNG preview beside it; "
        "default png)",
    )


def output_args(p: argparse.ArgumentParser, default_out: str) -> None:
    """Output, batching, band, figures and progress options of a command that writes a result."""
    p.add_argument(
        "--out",
        default=default_out,
        help=f"output directory, replaced atomically (default: {default_out})",
    )
    p.add_argument(
        "--batch-size", type=int, default=32, help="inputs per forward pass (default 32)"
    )
    p.add_argument("--layers", default=None, help=LAYERS_HELP)
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    format_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def facts_args(p: argparse.ArgumentParser) -> None:
    """How the run's massive coordinates are chosen (stages that read the circuit facts)."""
    p.add_argument(
        "--coords",
        default=None,
        help="massive coordinates, e.g. 138,378,447 (default: --coords-rule on EPE_0)",
    )
    p.add_argument(
        "--coords-rule",
        choices=("paper", "sigma"),
        default=None,
        help="without --coords: paper = the paper's code for each analysis (top-3 |EPE_0| for "
        "the W_K edits; mean + SIGMA*sample std, else the top-2, for γ); sigma = |EPE_0[d]| > "
        "mean + SIGMA*std (population std) (default: intervene: the preset's, paper -> paper, "
        "none -> sigma; others: paper)",
    )
    p.add_argument(
        "--sigma",
        type=float,
        default=None,
        help="the sigma rule's SIGMA (default 3); for intervene's and mitigate's W_K edits, "
        "giving it selects the sigma rule; explain's γ uses it under either rule",
    )


def run_options(args: argparse.Namespace, **over: Any) -> RunOptions:
    """The shared options of a command, as the stages take them (checked by ``prepare``)."""
    from ..stages.runner import RunOptions

    kw = dict(
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        device_map=args.device_map,
        inputs=args.inputs,
        max_tokens=args.max_tokens,
        short=args.short,
        per_domain=args.per_domain,
        seed=args.seed,
        bos=args.bos,
        batch_size=args.batch_size,
        band=parse_band(args.layers),
        coords=parse_coords(getattr(args, "coords", None)),
        k_sigma=getattr(args, "sigma", None),
        coords_rule=getattr(args, "coords_rule", None),
        out=args.out,
        figures=not getattr(args, "no_figures", False),
        progress=not args.quiet,
    )
    return RunOptions(**(kw | over))


def command_line(argv0: str, rest: list[str]) -> str:
    """The command as typed (for run records), when run as ``sinkscope``."""
    return "sinkscope " + " ".join(rest) if argv0.endswith("sinkscope") else ""
