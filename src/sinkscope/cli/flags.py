"""The flags that every stage (and most studies) share, defined once, and the RunOptions they
become. Torch-free: ``sinkscope --help`` and every argument check run before torch loads."""

from __future__ import annotations

import argparse
import textwrap
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
LAYERS_HELP = (
    "layer band START:STOP, 0-based, stop excluded: the layers every band mean averages "
    "(default: the paper's 3:11 of 12, scaled to the model's depth)"
)
TERMS = "terms: docs/glossary.md"  # the last line of every command's --help


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, except that a description or epilog line that starts with a space is
    kept as written (examples keep their lines); other lines are wrapped as prose."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        prose: list[str] = []

        def flush() -> None:
            if prose:
                out.append(textwrap.fill(" ".join(prose), width, initial_indent=indent,
                                         subsequent_indent=indent))  # fmt: skip
                prose.clear()

        for line in text.splitlines():
            if line.strip() and not line.startswith(" "):
                prose.append(line.strip())
                continue
            flush()
            out.append(indent + line if line.strip() else "")
        flush()
        return "\n".join(out)


def epilog(*examples: str, note: str = "") -> str:
    """A command's --help epilog: its example command lines, an optional note, the glossary link.

    >>> print(epilog("sinkscope measure --per-domain 5"))
    example:
      sinkscope measure --per-domain 5
    <BLANKLINE>
    terms: docs/glossary.md
    """
    head = "example:" if len(examples) == 1 else "examples:"
    lines = [head, *(f"  {e}" for e in examples), ""]
    return "\n".join(lines + ([note, ""] if note else []) + [TERMS])


def describe(p: argparse.ArgumentParser, *examples: str, note: str = "") -> None:
    """Give ``p`` its epilog (:func:`epilog`) and the formatter that keeps the examples' lines."""
    p.formatter_class = HelpFormatter
    p.epilog = epilog(*examples, note=note)


def model_args(p: argparse.ArgumentParser, *, multi: bool | str = False) -> None:
    """``--model`` (and, for a stage over several models, ``--models``); ``multi="required"``:
    only ``--models``, required (a comparison names its models; ``args.model`` is None)."""
    if multi != "required":
        p.add_argument("--model", default="default", help=MODEL_HELP)
    else:
        p.set_defaults(model=None)
    if multi:
        p.add_argument(
            "--models",
            default=None,
            required=multi == "required",
            help="comma-separated model specs, each as --model takes them, e.g. "
            "default,packaged:smollm2,packaged:qwen2.5-coder-0.5b"
            + (" (required)" if multi == "required" else " (default: --model)"),
        )


def load_args(p: argparse.ArgumentParser) -> None:
    """Where and in what precision the model is loaded: --device, --dtype, --device-map."""
    from ..models.options import DTYPE_HELP

    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--dtype", default="auto", help=DTYPE_HELP)
    p.add_argument(
        "--device-map",
        default=None,
        help="auto: accelerate places the layers on every GPU, then CPU memory (needs no "
        "--device) (default: none, the whole model on --device)",
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
        help="texts under --max-tokens tokens: skip = leave them out and count them; keep = keep "
        "them at their own length (default: skip)",
    )
    p.add_argument(
        "--per-domain",
        type=int,
        default=None,
        help="keep at most N inputs per domain (default: all; the default corpus has 100 per "
        "domain)",
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
        help="prepend the tokenizer's BOS token (--bos alone: on); auto: only for models "
        "sinkscope trained with a BOS first token (default: auto; the paper uses none)",
    )


def quiet_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars (results still print)")


def figure_args(p: argparse.ArgumentParser, no_figures: str = "write no figures") -> None:
    """``--no-figures`` and ``--format``: every command that draws figures takes both."""
    p.add_argument("--no-figures", action="store_true", help=f"{no_figures} (faster)")
    format_arg(p)


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
    out_args(p, default_out)
    p.add_argument(
        "--batch-size", type=int, default=32, help="inputs per forward pass (default 32)"
    )
    p.add_argument("--layers", default=None, help=LAYERS_HELP)
    figure_args(p)
    quiet_arg(p)


FORCE_HELP = (
    "let --out replace the results of a different run (without it such a folder is refused; "
    "the same settings always replace their own)"
)


def out_args(
    p: argparse.ArgumentParser, root: str, what: str = "output directory", force: str = FORCE_HELP
) -> None:
    """``--out`` (default: the run's own folder under ``root``) and ``--force``."""
    p.add_argument(
        "--out",
        default=None,
        help=f"{what}, written atomically (default: {root}/MODEL-HASH/, a folder of this run's "
        f"own, named by its model and a hash of its settings; {root}/latest points at the newest)",
    )
    p.add_argument("--force", action="store_true", help=force)
    p.set_defaults(out_root=root)


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
        out_root=getattr(args, "out_root", None) if args.out is None else None,
        force=getattr(args, "force", False),
        figures=not getattr(args, "no_figures", False),
        progress=not args.quiet,
    )
    return RunOptions(**(kw | over))


def command_line(argv0: str, rest: list[str]) -> str:
    """The command as typed (for run records), when run as ``sinkscope``."""
    return "sinkscope " + " ".join(rest) if argv0.endswith("sinkscope") else ""
