"""``reproduce``'s plan: its :class:`Settings`, the stage flags it offers, and its steps
(``facts``, then every registered stage's ``reproduce`` steps in order), each a
:class:`PlannedStep` that builds its stage's Config and runs it."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import SinkscopeError

if TYPE_CHECKING:
    from ..registry import Stage
    from .reproduce import Context


@dataclass
class Settings:
    """What the steps read besides the model and the inputs (all recorded in the report):
    the shared run settings, the steps to skip, and ``options``: values of the stages' flags
    that ``reproduce`` offers (``{"strengths": (1.0, 0.0), "sentence": "..."}``), by field."""

    band: tuple[int, int] | None = None  # None: the paper's 3:11 of 12, scaled
    coords: list[int] | None = (
        None  # None: the EPE rule (or the paper's for GPT-2 small without its MLP)
    )
    k_sigma: float = 3.0
    seed: int = 0
    batch_size: int = 32
    max_tokens: int = 40
    skip: tuple[str, ...] = ()
    options: dict = field(default_factory=dict)

    def record(self) -> dict:
        """The settings as ``run.json`` and the report list them: the shared ones, then each
        stage option reproduce offers with the value this run used (its default unless given)."""
        shared = {k: v for k, v in asdict(self).items() if k != "options"}
        return shared | {k: self.options.get(k, v[2]) for k, v in reproduce_options().items()}

    def __post_init__(self):
        names = step_names()
        unknown = [x for x in self.skip if x not in names]
        if unknown:
            raise SinkscopeError(
                f"--skip {','.join(self.skip)}: unknown stage {', '.join(unknown)}; "
                f"choose from {', '.join(names)}"
            )
        if self.batch_size < 1:
            raise SinkscopeError(f"--batch-size {self.batch_size} must be at least 1")
        offered = reproduce_options()
        bad = [k for k in self.options if k not in offered]
        if bad:
            raise SinkscopeError(
                f"reproduce has no option {', '.join(bad)}; "
                f"it offers {', '.join(offered) or 'none'}"
            )
        from ..registry import steps

        for st, cls in steps():  # every step's Config checked now, before a model loads
            _planned(st, cls).config(self).check()


def reproduce_options() -> dict[str, tuple]:
    """``{field: (stage class, Option, reproduce's default)}`` of the stage flags ``reproduce``
    offers (an Option with ``reproduce`` set)."""
    from ..registry import field_option, steps

    out: dict[str, tuple] = {}
    for _, cls in steps():
        for f in dataclasses.fields(cls):
            o = field_option(f)
            if o is not None and o.reproduce is not False and f.name not in out:
                out[f.name] = (cls, o, f.default if o.reproduce is True else o.reproduce)
    return out


@dataclass
class PlannedStep:
    """One step of the run: the stage it runs (``config_cls`` with ``step.overrides``), or the
    built-in ``facts``; ``run(ctx, tmp) -> record`` (tests may replace it)."""

    name: str
    title: str
    forward: bool  # needs a forward pass (and inputs)
    reads: tuple[str, ...]  # the Settings fields its results depend on
    after: tuple[str, ...]  # steps whose results it needs
    run: Callable
    uses: tuple[str, ...] = ()
    reads_inputs: bool | Callable = False
    config_cls: type | None = None
    step: object = None  # the registry's Step
    record: type | None = None
    reading: Callable | None = None
    section: Callable | None = None

    def config(self, settings: Settings) -> Stage:
        """The stage Config this step runs: reproduce's options for its fields, the shared run
        settings for fields named like them (or mapped by ``step.run_fields``), the overrides."""
        cls, st = self.config_cls, self.step
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v[2] for k, v in reproduce_options().items() if k in names and v[0] is cls}
        kw |= {k: v for k, v in settings.options.items() if k in names and k in kw}
        kw |= {k: getattr(settings, k) for k in ("seed", "max_tokens") if k in names}
        kw |= {k: getattr(settings, v) for k, v in st.run_fields.items()}
        return cls(**(kw | st.overrides))

    def config_key(self, settings: Settings) -> dict | None:
        return None if self.config_cls is None else asdict(self.config(settings))


# --- the plan ---------------------------------------------------------------------------------

_PLAN: dict[tuple, list[PlannedStep]] = {}


def step_names() -> list[str]:
    """The names of :func:`plan`'s steps, without building it (no report modules imported)."""
    from ..registry import steps

    return ["facts"] + [st.name for st, _ in steps()]


def plan() -> list[PlannedStep]:
    """``facts``, then every registered stage's steps in order (one list per registry state, so
    a step's ``run`` replaced by a test is the one the run calls)."""
    from ..registry import stages, steps

    state = tuple((n, id(c)) for n, c in stages().items())
    if state not in _PLAN:
        _PLAN.clear()
        from .reproduce_facts import facts_step

        _PLAN[state] = [facts_step()] + [_planned(st, cls) for st, cls in steps()]
    return _PLAN[state]


def _planned(st, cls) -> PlannedStep:
    forward = cls.needs_forward if st.forward is None else st.forward
    p = PlannedStep(
        st.name,
        st.title or cls.title or cls.help,
        forward,
        st.reads,
        st.after,
        None,
        reads_inputs=st.reads_inputs,
        config_cls=cls,
        step=st,
        record=st.record or cls.record,
        reading=st.reading or cls.reading,
        section=st.section or cls.section,
    )
    p.run = lambda ctx, tmp, p=p: _run_step(p, ctx, tmp)
    return p


def _run_step(p: PlannedStep, ctx: Context, tmp: Path) -> dict:
    """A registered stage's step: its Config's ``compute`` with the run's facts, then the
    stage's own ``write`` (the files ``sinkscope <stage>`` writes, with the same load record)."""
    from ..stages.runner import combines_models, load_record

    cfg = p.config(ctx.settings)
    needs = set(getattr(cfg, "facts", ()))
    res = cfg.compute(
        ctx.model,
        ctx.inputs if (p.forward or _uses_inputs(p, ctx.model)) else None,
        ctx.facts if needs else None,
        band=ctx.band,
        batch_size=ctx.settings.batch_size,
        progress=ctx.progress,
    )
    if p.step.finish is not None:
        p.step.finish(res, ctx.model)
    rec = load_record({ctx.model.name: ctx.model.record()}, per_model=combines_models(res))
    figs = res.write(tmp, extra=rec)
    return {"summary": res.summary(), "figures": figs, "tables": dict(res.tables)}


def _uses_inputs(p: PlannedStep, model) -> bool:
    r = p.reads_inputs
    return bool(r(model)) if callable(r) else bool(r)


def resolve_defaults(model: str | None, inputs: str | None) -> tuple[str, str, list[str]]:
    """``reproduce``'s defaults: ``(model spec, inputs spec, notes for the report)``. No model:
    ``gpt2`` when the hub answers, else the embedded model (with a note saying so). No inputs:
    the paper's 300 texts for GPT-2 small (``paper-offline``: shipped, no hub needed), else the
    offline corpus."""
    from ..models.precheck import is_gpt2_small, model_config
    from ..models.sources import hub_reachable

    notes: list[str] = []
    if model is None:
        hub, why = hub_reachable("gpt2")
        model = "gpt2" if hub else "default"
        if not hub:
            notes.append(
                f"The Hugging Face hub is not reachable ({why}), so this run uses the embedded default model instead of gpt2; "
                "pass --model gpt2 once online, or --model PATH for a local GPT-2."
            )
    if inputs is None:
        inputs = "default"
        if (
            model != "default"
            and not model.startswith("packaged:")
            and not model.endswith((".gguf", ".safetensors"))
        ):
            cfg = model_config(model)  # config.json as written (no transformers: fast, offline)
            if cfg is not None and is_gpt2_small(cfg):
                inputs = "paper-offline"
    return model, inputs, notes
