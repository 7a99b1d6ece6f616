"""The stage registry: every study stage is one class, registered with :func:`register_stage`.

A *stage* is a dataclass (its Config) whose fields carry their CLI flag, help and default
(:func:`option`), with class attributes naming it and methods that compute a Result. The CLI
(``sinkscope <stage>``, ``--help``), ``reproduce`` (its steps), the API (``sinkscope.run``) and
``report.html`` are all built by iterating :func:`stages`. Built-in stages are the modules of
the package :mod:`sinkscope.stages` (a new file there is a new stage); other packages add theirs
through the entry-point group ``sinkscope.stages`` (see ``docs/plugins.md``).

This module is the lowest layer: it imports nothing from sinkscope but the errors, and no
torch, so ``sinkscope --help`` stays fast.

>>> from dataclasses import dataclass
>>> @dataclass
... class Toy(Stage):
...     name = "toy-doc"
...     help = "a toy stage"
...     k: int = option(3, "--k", "how many", parse=int)
>>> register_stage(Toy, replace=True) is Toy, Toy.options()[0].flag, Toy().k
(True, '--k', 3)
>>> unregister_stage("toy-doc")
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from .errors import SinkscopeError

if TYPE_CHECKING:
    import argparse

ENTRY_POINT_GROUP = "sinkscope.stages"
BUILTIN_PACKAGE = "sinkscope.stages"
_KEY = "sinkscope"  # dataclass field metadata key
RUN_FIELDS = ("seed", "max_tokens")  # Config fields without a flag that take the run's value


# --- options: a Config field that is also a CLI flag --------------------------------------------


@dataclass(frozen=True)
class Option:
    """How a Config field appears on the command line.

    ``parse`` turns the flag's text into the field's value (raising :class:`SinkscopeError` with
    the flag's name on bad text); ``action`` is ``"store_true"`` / ``"append"`` for switches and
    repeatable flags; ``reproduce``: the flag is also offered by ``sinkscope reproduce`` (True:
    with the same default; any other value: reproduce's own default for it); ``cli``: False keeps
    the field out of the CLI (set from Python or by a reproduce step only).
    """

    flag: str
    help: str
    parse: Callable[[str], Any] | None = None
    choices: tuple | None = None
    action: str | None = None
    metavar: str | None = None
    reproduce: Any = False
    cli: bool = True
    shown_default: str | None = None  # how --help shows the default (None: the value itself)

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def value(self, v: Any) -> Any:
        """The flag's text parsed (each item of a repeatable flag; a bad text is one line naming
        the flag) and checked against ``choices``; other values are kept."""
        if isinstance(v, tuple) and self.action == "append":  # each repeat parsed
            return tuple(self.value(x) for x in v)
        if self.parse is not None and isinstance(v, str):
            try:
                v = self.parse(v)
            except SinkscopeError:
                raise
            except (ValueError, TypeError) as e:
                raise SinkscopeError(f"{self.flag} {v!r} is not valid ({e})") from None
        if self.choices and v is not None and not isinstance(v, tuple) and v not in self.choices:
            raise SinkscopeError(
                f"{self.flag} {v!r}: choose from {', '.join(map(str, self.choices))}"
            )
        return v


def option(default: Any, flag: str, help: str, **kw: Any) -> Any:
    """A dataclass field with a CLI flag: ``keys: tuple = option((0, 1), "--keys", "...")``.

    The default shows in ``--help`` (unless ``help`` already says "default").
    """
    return dataclasses.field(default=default, metadata={_KEY: Option(flag, help, **kw)})


def field_option(f: dataclasses.Field) -> Option | None:
    return f.metadata.get(_KEY)


def show_default(value: Any, opt: Option) -> str:
    if opt.shown_default is not None:
        return opt.shown_default
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


# --- reproduce steps ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One stage of ``sinkscope reproduce``: a registered stage run with fixed ``overrides``.

    ``order`` places it (built-ins use 10..70; plugins default to 100); ``after`` names the steps
    it needs (``"facts"``: the run's circuit facts); ``reads`` the shared run settings in its
    cache key beside its Config; ``run_fields`` fills Config fields from run settings
    (``{"seq_len": "max_tokens"}``; a field named like a run setting, e.g. ``seed``, is filled
    without asking); ``title`` / ``reading`` / ``section`` / ``record`` default to
    the stage's own. ``finish(result, model)`` may add to the result before it is written.
    """

    name: str
    order: int = 100
    overrides: dict = dataclasses.field(default_factory=dict)
    after: tuple[str, ...] = ("facts",)
    reads: tuple[str, ...] = ("band",)
    run_fields: dict = dataclasses.field(default_factory=dict)  # config field -> run setting
    title: str | None = None
    record: type | None = None
    reading: Callable | None = None
    section: Callable | None = None
    reads_inputs: bool | Callable = False  # a weight-only step that uses inputs when there are some
    forward: bool | None = None  # needs a forward pass (None: the stage's needs_forward)
    finish: Callable | None = None


# --- the stage protocol ---------------------------------------------------------------------------


class Stage:
    """Base of every stage Config (a dataclass). Subclasses set the class attributes and
    ``compute``; the rest has defaults.

    - ``name``: the command (``sinkscope NAME``) and the key everywhere; ``help``: one line.
    - ``example``: command line(s) for its ``--help`` epilog, runnable offline on the embedded
      model (``tests/test_help.py`` parses them; default: ``sinkscope NAME``).
    - ``title``: the report section's heading; ``record``: the typed record of the summary the
      report reads (a dataclass, :mod:`sinkscope.report.records`; None: the raw summary dict).
    - ``needs_forward``: False when the weights suffice (inputs optional).
    - ``facts``: the circuit facts it reads (``"coords"``, ``"q_bar"``).
    - ``multi_model``: the CLI takes ``--models`` and :meth:`compute` results are combined with
      ``Result.concat``.
    - ``steps``: its ``reproduce`` steps (default: one, named after the stage; ``()``: none).
    - ``compute(model, inputs, facts, *, band, batch_size, progress) -> Result``; a Result has
      ``summary()``, ``frames()``, ``write(out, figures=, extra=)``, ``tables`` and ``format()``.
    """

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    example: ClassVar[str] = ""  # one command per line, e.g. "sinkscope NAME --per-domain 5"
    title: ClassVar[str] = ""
    record: ClassVar[type | None] = None
    needs_forward: ClassVar[bool] = True
    facts: ClassVar[tuple[str, ...]] = ()
    multi_model: ClassVar[bool | str] = False  # True: --models (default --model); "required"
    steps: ClassVar[tuple[Step, ...] | None] = None  # None: one default step
    source: ClassVar[str] = "sinkscope"  # who registered it (a plugin: its distribution)

    def check(self) -> None:
        """Cheap checks of the settings (no model, no torch): raise :class:`SinkscopeError`."""

    def settle(self, opts: Any) -> None:
        """Decide what the stage's settings imply for the run (``opts``: the RunOptions), once,
        before anything loads: e.g. a preset's coordinate rule and dtype."""
        if getattr(opts, "coords_rule", None) is None:
            opts.coords_rule = "paper"

    def compute(
        self,
        model: Any,
        inputs: Any,
        facts: Any = None,
        *,
        band: tuple[int, int] | None = None,
        batch_size: int = 32,
        progress: bool = True,
    ) -> Any:
        raise NotImplementedError(f"stage {self.name} has no compute()")

    @staticmethod
    def reading(record: Any) -> str:
        """The report's plain-language reading of this stage's record."""
        return ""

    @staticmethod
    def section(record: Any) -> str:
        """The report's HTML tables for this stage's record (figures are added by the report)."""
        return ""

    @classmethod
    def options(cls) -> list[Option]:
        return [o for f in dataclasses.fields(cls) if (o := field_option(f)) is not None]

    @classmethod
    def reproduce_steps(cls) -> tuple[Step, ...]:
        return (Step(cls.name),) if cls.steps is None else cls.steps

    @classmethod
    def from_cli(cls, args: argparse.Namespace) -> Stage:
        """The Config from parsed CLI arguments (each option's ``parse`` applied)."""
        kw = {}
        for f in dataclasses.fields(cls):
            o = field_option(f)
            if o is None and f.name in RUN_FIELDS and hasattr(args, f.name):
                kw[f.name] = getattr(args, f.name)  # the run's --seed / --max-tokens
                continue
            if o is None or not o.cli or not hasattr(args, o.dest):
                continue
            v = getattr(args, o.dest)
            v = tuple(v) if isinstance(v, list) else v  # an "append" flag
            kw[f.name] = o.value(v)
        return cls(**kw)


# --- the registry ---------------------------------------------------------------------------------

# the studies' commands and the flags every stage shares (sinkscope.cli owns their definitions;
# tests/test_plugins.py checks that these lists match them): a stage may use neither
RESERVED_COMMANDS = ("reproduce", "sweep", "train", "dynamics", "zoo")
RESERVED_FLAGS = (
    "-h", "--help", "--model", "--models", "--device", "--dtype", "--device-map", "--inputs",
    "--max-tokens", "--short", "--per-domain", "--seed", "--bos", "--out", "--batch-size",
    "--layers", "--no-figures", "--format", "--quiet", "--coords", "--coords-rule", "--sigma",
    "--skip", "--force",
)  # fmt: skip

_STAGES: dict[str, type] = {}
_discovered = False
PLUGIN_ERRORS: list[str] = []  # plugins that failed to load (shown by sinkscope --help)


def register_stage(cls: type | None = None, *, replace: bool = False) -> Any:
    """Class decorator: add a stage Config to the registry (``@register_stage``)."""

    def add(c: type) -> type:
        if not (isinstance(c, type) and issubclass(c, Stage) and dataclasses.is_dataclass(c)):
            raise TypeError(f"{c!r} is not a dataclass subclass of sinkscope.registry.Stage")
        if not c.name or not c.help:
            raise TypeError(f"stage {c.__name__} needs a name and a one-line help")
        old = _STAGES.get(c.name)
        if old is not None and old is not c and not replace:
            if old.__qualname__ == c.__qualname__ and old.__module__ == c.__module__:
                pass  # the same module imported twice (e.g. reloaded): take the new class
            else:
                raise SinkscopeError(
                    f"stage '{c.name}' is registered twice ({old.__module__} "
                    f"and {c.__module__}); rename one"
                )
        _STAGES[c.name] = c
        return c

    return add(cls) if cls is not None else add


def unregister_stage(name: str) -> None:
    _STAGES.pop(name, None)


def check_stage(cls: type, others: dict[str, type] | None = None) -> None:
    """Everything the CLI, ``reproduce`` and the API will ask of a stage, checked now: a
    :class:`SinkscopeError` names the first problem (a plugin with one is not loaded)."""
    where = f"stage '{cls.name}' ({cls.__module__})"
    if cls.name in RESERVED_COMMANDS:
        raise SinkscopeError(f"{where}: '{cls.name}' is a sinkscope command; rename the stage")
    flags: set[str] = set()
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SinkscopeError(f"{where}: the field '{f.name}' has no default; give it one")
        o = field_option(f)
        if o is None:
            continue
        if o.flag in RESERVED_FLAGS:
            raise SinkscopeError(
                f"{where}: {o.flag} is one of the flags every stage shares; "
                "name the option otherwise"
            )
        if o.flag in flags:
            raise SinkscopeError(f"{where}: two fields use {o.flag}")
        if not o.cli and o.reproduce is not False:
            raise SinkscopeError(
                f"{where}: '{f.name}' is offered to reproduce but not to the CLI "
                "(cli=False); drop one of them"
            )
        flags.add(o.flag)
    taken = {"facts"} | {
        s.name for c in (others or {}).values() if c is not cls for s in c.reproduce_steps()
    }
    clash = sorted({s.name for s in cls.reproduce_steps()} & taken)
    if clash:
        raise SinkscopeError(
            f"{where}: reproduce step(s) {', '.join(clash)} already exist; rename the step(s)"
        )


def _builtin_modules() -> list[str]:
    pkg = importlib.import_module(BUILTIN_PACKAGE)
    return [
        f"{BUILTIN_PACKAGE}.{m.name}"
        for m in pkgutil.iter_modules(pkg.__path__)
        if not m.name.startswith("_")
    ]


def _entry_points():
    from importlib.metadata import entry_points

    return list(entry_points(group=ENTRY_POINT_GROUP))


def discover(*, force: bool = False) -> None:
    """Import every built-in stage module and every ``sinkscope.stages`` entry point (once).

    A plugin that fails to import is reported in :data:`PLUGIN_ERRORS` (and by ``--help``), not
    fatal: one broken package must not take the CLI down.
    """
    global _discovered
    if _discovered and not force:
        return
    _discovered = True
    for mod in _builtin_modules():
        importlib.import_module(mod)
    PLUGIN_ERRORS.clear()
    for ep in _entry_points():
        before = dict(_STAGES)
        try:
            _load_plugin(ep, before)
        except Exception as e:  # noqa: BLE001 - a broken plugin is reported, not fatal
            for name in set(_STAGES) - set(before):  # whatever it registered goes too
                del _STAGES[name]
            _STAGES.update(before)
            why = str(e) if isinstance(e, SinkscopeError) else f"{type(e).__name__}: {e}"
            PLUGIN_ERRORS.append(f"{ep.name} ({ep.value}): {why}")


def _load_plugin(ep, before: dict[str, type]) -> None:
    """Import one entry point; it must name a Stage its import registered, and each stage it
    registered must pass :func:`check_stage`."""
    obj = ep.load()
    if not (isinstance(obj, type) and issubclass(obj, Stage)):
        raise SinkscopeError("the entry point does not name a sinkscope.registry.Stage class")
    if before.get(obj.name) is not None and before[obj.name] is not obj:
        raise SinkscopeError(
            f"stage '{obj.name}' clashes with the one from {before[obj.name].__module__}; rename it"
        )
    if obj.name not in _STAGES:
        raise SinkscopeError(f"{obj.__name__} is not registered: decorate it with @register_stage")
    dist = getattr(getattr(ep, "dist", None), "name", None) or ep.value.split(":")[0]
    for name in set(_STAGES) - set(before):
        check_stage(_STAGES[name], _STAGES)
        if _STAGES[name].source == "sinkscope":
            _STAGES[name].source = dist


def stages() -> dict[str, type]:
    """Every registered stage, ``{name: Config class}``: built-ins first, in the order of their
    reproduce steps (those without one last), then plugins."""
    discover()

    def first_step(c) -> int:
        return min((s.order for s in c.reproduce_steps()), default=1000)

    return dict(
        sorted(_STAGES.items(), key=lambda kv: (kv[1].source != "sinkscope", first_step(kv[1])))
    )


def get_stage(name: str) -> type:
    reg = stages()
    if name not in reg:
        raise SinkscopeError(f"no stage named '{name}'; choose from {', '.join(reg)}")
    return reg[name]


def steps() -> list[tuple[Step, type]]:
    """Every ``reproduce`` step with its stage, in ``order``."""
    out = [(s, cls) for cls in stages().values() for s in cls.reproduce_steps()]
    names = [s.name for s, _ in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SinkscopeError(f"reproduce step(s) {', '.join(sorted(dup))} are declared twice")
    return sorted(out, key=lambda sc: sc[0].order)
