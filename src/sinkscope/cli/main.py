"""Command line: ``sinkscope <command>``: one subcommand per registered stage (``measure``,
``explain``, ``intervene``, ``compare``, ``mitigate``, ``shared-query`` and any plugin's, built
from :mod:`sinkscope.registry`) and the studies (``reproduce``, ``sweep``, ``train``,
``dynamics``, ``zoo``).

Every user error is one line on stderr and exit code 2; results appear atomically. Arguments are
parsed and checked before torch is imported.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import SinkscopeError
from . import studies, train

STUDIES = {  # name: (help, add its arguments, run it); registry.RESERVED_COMMANDS names them
    "reproduce": (
        "the whole study on one model: cached stages + a self-contained report.html "
        "with every figure, Table 1 and paper vs this run",
        studies._reproduce_args,
        studies.cmd_reproduce,
    ),
    "sweep": (
        "one question along the study's axes: models / checkpoints x lengths x content x "
        "seeds, each cell the paper's interventions; cached, resumable, local or Ray",
        studies._sweep_args,
        studies.cmd_sweep,
    ),
    "train": (
        "train a small GPT-2-style model with sink-circuit components switched on/off",
        train._train_args,
        train.cmd_train,
    ),
    "dynamics": (
        "the sink circuit over a training run's kept steps (train --save-at): sink, EPE, "
        "alignment, edits, pathways, onset",
        studies._dynamics_args,
        studies.cmd_dynamics,
    ),
    "zoo": (
        "train every variant (full, no b_Q, rotary, no positions, no MLP, 3 normalisers) and "
        "compare their sinks",
        train._zoo_args,
        train.cmd_zoo,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The parser: the registry's stages, then the studies (torch-free)."""
    from .. import __version__
    from ..registry import PLUGIN_ERRORS, stages
    from .flags import TERMS
    from .stage_commands import add_stage_parser

    reg = stages()
    epilog = "start with: sinkscope measure   (then: sinkscope reproduce)\n" + TERMS
    if PLUGIN_ERRORS:
        epilog += "\nplugins that failed to load: " + "; ".join(PLUGIN_ERRORS)
    parser = argparse.ArgumentParser(
        prog="sinkscope",
        description="Find, explain, break and fix attention sinks.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sinkscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for cls in reg.values():
        add_stage_parser(sub, cls)
    for name, (text, add, _) in STUDIES.items():
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        add(p)
    return parser


def _dispatch(args) -> int:
    if getattr(args, "stage", None):
        from ..registry import get_stage
        from .stage_commands import run_stage_command

        return run_stage_command(get_stage(args.stage), args)
    return STUDIES[args.command][2](args)


class Terminated(BaseException):
    """SIGTERM, raised like a Ctrl-C so that every temp directory is cleaned up on the way out."""


def _on_sigterm(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Parse and run one command in-process (``main(["measure", "--quiet"])``): 0, or 2 with one
    ``sinkscope: error:`` line for a user error, or 1 with one line for an internal error
    (``SINKSCOPE_DEBUG=1`` shows the traceback). A Ctrl-C stops the work cleanly (finished
    stages kept, temp files removed) and then reaches the caller as the ``KeyboardInterrupt`` it
    is; SIGTERM keeps the caller's own handler. Only :func:`console`, the ``sinkscope`` command,
    turns signals into exit codes."""
    try:
        return _run(argv)
    except KeyboardInterrupt as e:
        print(f"sinkscope: interrupted; {_interrupted_note(argv, e)}", file=sys.stderr)
        raise


def console() -> int:
    """The ``sinkscope`` command: :func:`main`, with Ctrl-C exiting 130 and SIGTERM 143 (temp
    files removed on the way out, as for Ctrl-C)."""
    import signal

    from ..io import signal_handlers

    try:
        with signal_handlers(_on_sigterm, signal.SIGTERM):
            return _run(None)
    except (KeyboardInterrupt, Terminated) as e:
        code, what = (143, "terminated") if isinstance(e, Terminated) else (130, "interrupted")
        print(f"sinkscope: {what}; {_interrupted_note(None, e)}", file=sys.stderr)
        return code


def _run(argv: list[str] | None) -> int:
    try:
        parser = build_parser()  # imports happen here, inside the handlers below
        from ..registry import PLUGIN_ERRORS

        for err in PLUGIN_ERRORS:  # said on every command: a missing plugin stage is no mystery
            print(f"sinkscope: warning: plugin not loaded: {err}", file=sys.stderr)
        args = parser.parse_args(argv)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from ..report.formats import figure_format

        with figure_format(
            getattr(args, "format", None)
        ):  # the run's figure format, set once for every command
            return _dispatch(args)
    except SinkscopeError as e:
        print(f"sinkscope: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (``sinkscope ... | head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:
        if os.environ.get("SINKSCOPE_DEBUG"):
            raise
        text = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        print(
            f"sinkscope: internal error: {type(e).__name__}{': ' + text if text else ''} "
            "(a bug in sinkscope; rerun with SINKSCOPE_DEBUG=1 for the traceback and report it)",
            file=sys.stderr,
        )
        return 1


def _interrupted_note(argv, exc: BaseException | None = None) -> str:
    """What an interrupted command leaves: the note it raised (reproduce), else train keeps its
    last checkpoint, the rest nothing."""
    from pathlib import Path

    if getattr(exc, "note", None):
        return exc.note
    argv = sys.argv[1:] if argv is None else argv
    outs = [b for a, b in zip(argv, argv[1:]) if a == "--out"] + [
        a[6:] for a in argv if a.startswith("--out=")
    ]
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
    sys.exit(console())
