"""``sinkscope <stage>`` for every registered stage: its parser (the shared flags, then its
Config's options) and its handler (Config from the flags, then the runner)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from ..registry import field_option, show_default
from . import flags

if TYPE_CHECKING:
    from typing import Any

    from ..registry import Option, Stage


def option_kwargs(opt: Option, default: Any) -> dict:
    """``add_argument`` keywords of a Config option (help ends with its default; a switch's
    default is the field's; choices are checked after ``parse``, on the parsed value)."""
    if opt.action in ("store_true", "store_false"):
        return {
            "help": opt.help,
            "dest": opt.dest,
            "action": opt.action,
            "default": default,  # the field's: the flag stores the other value
        }
    shown = show_default(default, opt)
    text = opt.help if "default" in opt.help else f"{opt.help} (default: {shown})"
    kw: dict = {"help": text, "dest": opt.dest}
    if opt.action == "append":
        kw |= {"action": "append", "default": []}
    else:
        kw["default"] = default
    if opt.choices and opt.parse is None:
        kw["choices"] = opt.choices
    if opt.metavar:
        kw["metavar"] = opt.metavar
    return kw


def add_config_options(
    p: argparse.ArgumentParser, cls, *, reproduce: bool = False, seen: set | None = None
) -> None:
    """The Config's options as flags (``reproduce``: only those reproduce offers, with its
    defaults); ``seen`` skips flags already added."""
    seen = set() if seen is None else seen
    for f in dataclasses.fields(cls):
        o = field_option(f)
        if o is None or not o.cli or o.flag in seen or (reproduce and o.reproduce is False):
            continue
        default = f.default if not reproduce or o.reproduce is True else o.reproduce
        p.add_argument(o.flag, **option_kwargs(o, default))
        seen.add(o.flag)


def add_stage_parser(sub: argparse._SubParsersAction, cls: type[Stage]) -> argparse.ArgumentParser:
    """The subcommand of stage ``cls``."""
    desc = cls.help[0].upper() + cls.help[1:] + "."
    if cls.source != "sinkscope":
        desc += f" (from the package {cls.source})"
    p = sub.add_parser(cls.name, help=cls.help, description=desc)
    flags.describe(p, *(cls.example or f"sinkscope {cls.name}").splitlines())
    flags.model_args(p, multi=cls.multi_model)
    flags.load_args(p)
    flags.input_args(p)
    flags.output_args(p, f"sinkscope-out/{cls.name}")
    if _reads_facts(cls):
        flags.facts_args(p)
    add_config_options(p, cls)
    p.set_defaults(stage=cls.name)
    return p


def _reads_facts(cls) -> bool:
    """The stage reads the circuit facts (a ``facts`` property: it may, depending on settings)."""
    import inspect

    f = inspect.getattr_static(cls, "facts")
    return isinstance(f, property) or bool(f)


def run_stage_command(cls: type[Stage], args: argparse.Namespace) -> int:
    """Config from the flags, then one model (``run_stage``) or several (``run_models``)."""
    from ..parsing import spec_list
    from ..stages.runner import run_models, run_stage

    config = cls.from_cli(args)
    opts = flags.run_options(args)
    if cls.multi_model:
        specs = spec_list(args.models if args.models is not None else args.model)
        ran = run_models(config, opts, list(specs))
    else:
        ran = run_stage(config, opts)
    print("\n".join(ran.loaded))
    print(ran.result.format())
    print(ran.wrote())
    return 0
