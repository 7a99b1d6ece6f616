"""The runner: the options every stage shares, and the run that checks them, loads the model and
the inputs, decides the circuit facts once, computes a stage and writes its result atomically.
``sinkscope <stage>`` is :func:`run_stage`; the API's ``sinkscope.run`` is :func:`compute_stage`
on a model already in memory; ``reproduce`` calls :func:`prepare` and the configs' ``compute``.

A stage is a :class:`sinkscope.registry.Stage`: ``name``, ``needs_forward`` (False: the weights
suffice, inputs optional), ``facts`` (which circuit facts it reads: ``"coords"``, ``"q_bar"``),
``check()`` (cheap option checks), ``settle(opts)`` (what its settings imply for the run, e.g. a
preset's dtype) and ``compute(model, inputs, facts, *, band, batch_size, progress) -> Result``; a
result has ``summary()``, ``frames()``, ``write(out, *, figures=True, extra=None) -> {figure:
caption}``, ``tables`` (``{file: description}``) and ``format()`` (the text the CLI prints).

>>> RunOptions(model="default", per_domain=6).inputs
'default'
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Protocol, Sequence

from ..errors import SinkscopeError
from ..registry import Stage

if TYPE_CHECKING:
    from ..analysis.facts import CircuitFacts, MassiveCoords
    from ..analysis.massive import ResidualProfile
    from ..data import TokenizedInputs
    from ..models import SinkModel


class StageResult(Protocol):
    """What a stage computes: its summary (``summary.json``), the files it writes, its text."""

    tables: dict[str, str]  # file name -> description

    def summary(self) -> dict: ...

    def frames(self) -> dict: ...

    def write(
        self, out: str | os.PathLike[str], *, figures: bool = True, extra: dict | None = None
    ) -> dict[str, str]: ...

    def format(self) -> str: ...


StageConfig = Stage  # every stage Config subclasses it (sinkscope.registry)


@dataclass
class RunOptions:
    """What every command shares: model, inputs, output and batching (the CLI's common flags)."""

    model: str = "default"
    device: str = "cpu"
    dtype: str = "auto"  # float32 | bfloat16 | float16 | auto (models.loading.resolve_dtype)
    device_map: str | None = None  # auto: accelerate places the layers (several GPUs, CPU offload)
    inputs: str = "default"
    max_tokens: int = 40
    short: str = "skip"  # texts under max_tokens: skip (count them) or keep at their own length
    per_domain: int | None = None
    seed: int = 0
    bos: str | bool = "auto"
    batch_size: int = 32
    band: tuple[int, int] | None = None
    coords: Sequence[int] | None = None  # the user's massive coordinates (--coords)
    k_sigma: float | None = None  # the EPE_0 rule's sigma (--sigma; None: 3, the stage's rule)
    coords_rule: str | None = None  # paper | sigma (analysis.facts.resolve_rule); None: the stage's
    out: str | None = None  # None: no files (the API), or the run's own folder under out_root
    out_root: str | None = None  # without --out: sinkscope-out/<command> (sinkscope.runs)
    force: bool = False  # --force: --out may hold a different run's results
    run: dict | None = None  # the settings that identify the run (settle_out), in its marker
    figures: bool = True
    progress: bool = True

    def check(self) -> None:
        from ..errors import check_number
        from ..models.options import check_device_map, check_dtype

        if self.k_sigma is not None:
            check_number("--sigma", self.k_sigma, 0.0, 1e6)
        check_dtype(self.dtype)
        check_device_map(self.device_map, self.device)
        if self.batch_size < 1:
            raise SinkscopeError(f"--batch-size {self.batch_size} must be at least 1")
        if self.per_domain is not None and self.per_domain < 1:
            raise SinkscopeError(f"--per-domain {self.per_domain} must be at least 1")


def open_model(opts: RunOptions, *, need_forward: bool = True) -> SinkModel:
    """The one load path (CLI, API specs, sweep, zoo, dynamics): ``opts.model`` (a spec or a
    model in memory) in ``opts``' device / dtype / placement, checked against the run's
    ``--coords`` and, with ``need_forward``, able to run a forward pass."""
    from ..models import load_model

    model = load_model(opts.model, device=opts.device, dtype=opts.dtype, device_map=opts.device_map)
    model.adapter.check_coords(opts.coords)
    if need_forward:
        model.adapter.require_forward()
    return model


def load(
    opts: RunOptions,
    *,
    need_forward: bool = True,
    weights_only: bool = False,
    kind: str = "result",
    checked: bool = False,
) -> tuple[SinkModel, TokenizedInputs | None]:
    """Cheap checks first (options, output directory, input files), then the model, then the
    tokenising: ``(model, inputs)``. ``inputs`` is None with ``weights_only`` or when
    ``need_forward`` is False and the model cannot run (a partial checkpoint). ``checked``: the
    caller ran :func:`preflight` on these options already (``load_each``, for every model)."""
    if not checked:
        preflight(opts, kind=kind)
    from ..data.readers import read_examples
    from ..data.spec import effective_per_domain, parse_spec

    spec_kind, _ = parse_spec(opts.inputs)
    per_domain = effective_per_domain(opts.inputs, opts.per_domain)

    def read(tok):
        return read_examples(
            opts.inputs,
            tokenizer=tok,
            per_domain=per_domain,
            max_tokens=opts.max_tokens,
            seed=opts.seed,
        )

    examples = (
        read(None) if spec_kind != "paper" and not weights_only else None
    )  # a bad file fails before torch is imported and the model loads
    from ..data import resolve_bos, tokenize_examples

    model = open_model(opts, need_forward=need_forward)
    if not need_forward and (weights_only or model.adapter.missing_tensors()):
        return model, None
    model.adapter.check_length(opts.max_tokens)
    if examples is None:
        examples = read(model.tokenizer)
    inputs = tokenize_examples(
        examples,
        model.tokenizer,
        max_tokens=opts.max_tokens,
        per_domain=per_domain,
        prepend_bos=resolve_bos(model, opts.bos),
        spec=opts.inputs,
        keep_short=opts.short == "keep",
    )
    return model, inputs


def preflight(
    opts: RunOptions,
    *,
    kind: str = "result",
    models: Sequence | None = None,
    length_flag: str = "--max-tokens",
) -> None:
    """Every check that needs neither torch nor the weights, before either: the options, the
    output folder (``kind``; a different run's is refused), each model spec (packaged name, path,
    hub id cached or reachable) and what its header tells (``--layers`` within its depth,
    ``--max-tokens`` within learned positions, ``--coords`` within its width)."""
    from ..io import check_output_dir
    from ..models.precheck import model_shape
    from ..parsing import resolve_band

    opts.check()
    if opts.out is not None:
        check_output_dir(opts.out, kind=kind, run=opts.run, force=opts.force)
    for spec in [opts.model] if models is None else models:
        shape = model_shape(spec)
        if shape is None:
            continue
        if shape.n_layers is not None:
            resolve_band(opts.band, shape.n_layers)
        if shape.n_ctx is not None and opts.max_tokens > shape.n_ctx:
            raise SinkscopeError(
                f"inputs of {opts.max_tokens} tokens do not fit the {shape.n_ctx} learned "
                f"positions of {spec}; use {length_flag} {shape.n_ctx} or less"
            )
        bad = [c for c in opts.coords or () if shape.d_model is not None and c >= shape.d_model]
        if bad:
            raise SinkscopeError(
                f"--coords: coordinate(s) {', '.join(map(str, bad[:5]))} outside the residual "
                f"width {shape.d_model} of {spec}; use 0..{shape.d_model - 1}"
            )


def _without_out(opts: RunOptions) -> RunOptions:
    one = copy.copy(opts)
    one.out = None  # the combined result's folder is checked by run_models
    return one


def load_each(opts: RunOptions, specs: Sequence[str]) -> Iterator[tuple]:
    """``(model, inputs)`` for each model spec in turn, with ``opts``' input options. Every spec is
    checked cheaply first, so a bad last model fails before the first one runs."""
    if not specs:
        raise SinkscopeError("--models is empty; pass e.g. --models default,packaged:smollm2")
    if len(set(specs)) < len(specs):
        raise SinkscopeError(f"--models {','.join(specs)} names a model twice; give each once")
    preflight(_without_out(opts), models=specs)
    from ..models.loading import precheck_model, resolve_device

    resolve_device(opts.device)
    for spec in specs:
        precheck_model(spec)
    base = lambda s: os.path.basename(os.path.normpath(s))  # noqa: E731
    for spec in specs:
        one = copy.copy(opts)
        one.model, one.out = spec, None
        model, inputs = load(one, checked=True)
        if sum(base(x) == base(spec) for x in specs) > 1:
            model.name = spec  # two models with one display name (x/run, y/run): tell them apart by their spec
        yield model, inputs


def facts_for(
    config: StageConfig,
    model: SinkModel,
    inputs: TokenizedInputs | None,
    opts: RunOptions,
    *,
    profile: ResidualProfile | None = None,
    fallback: MassiveCoords | None = None,
) -> CircuitFacts | None:
    """The run's :class:`~sinkscope.analysis.facts.CircuitFacts`, decided once, for what
    ``config.facts`` asks (None when it asks nothing)."""
    from ..analysis.facts import resolve_facts

    need = getattr(config, "facts", ())
    if not need:
        return None
    k_sigma = 3.0 if opts.k_sigma is None else opts.k_sigma
    return resolve_facts(
        model,
        inputs,
        coords=opts.coords,
        k_sigma=k_sigma,
        coords_rule=opts.coords_rule or "paper",
        band=opts.band,
        q_bar="q_bar" in need,
        profile=profile,
        fallback=fallback,
        batch_size=opts.batch_size,
        progress=opts.progress,
    )


def combines_models(res: StageResult) -> bool:
    """A result that combines models (``compare``, ``mitigate``: it has ``concat``) records each
    model's load, however many it holds."""
    return hasattr(type(res), "concat")


def load_record(recs: dict[str, dict], *, per_model: bool) -> dict:
    """How the model(s) of a result were loaded (``{name: SinkModel.record()}``: ``model_source``
    with the hub revision, ``dtype``, ``device_map``, ``devices``), for its summary: the one
    model's values, or with ``per_model`` ``{field: {model name: value}}``.

    >>> load_record({"m": {"dtype": "float32"}}, per_model=True)
    {'dtype': {'m': 'float32'}}
    """
    if not per_model:
        (rec,) = recs.values()
        return rec
    return {
        k: {name: r.get(k) for name, r in recs.items()}
        for k in dict.fromkeys(k for r in recs.values() for k in r)
    }


@dataclass
class Ran:
    """A stage that ran and wrote its directory: the result, the figures it wrote
    (``{file: caption}``), the seconds the whole command took and one line per model loaded
    (its dtype and devices)."""

    result: StageResult
    figures: dict[str, str]
    seconds: float
    loaded: list[str]
    out: str = ""

    def wrote(self) -> str:
        """The CLI's last line: what the result wrote, and where (the run's folder)."""
        files = (
            list(self.result.tables)
            + [getattr(self.result, "summary_file", "summary.json")]
            + (["figures"] if self.figures else [])
        )
        return f"wrote {self.out}/ ({', '.join(files)}) in {self.seconds:.0f} s"


def _write(res: StageResult, recs: dict[str, dict], opts: RunOptions, t0: float) -> Ran:
    """Write ``res`` to ``opts.out`` atomically; ``summary.json`` gains how the models were
    loaded (``recs``, ``{name: SinkModel.record()}``, see :func:`load_record`) and ``total_seconds``."""
    from ..io import atomic_output_dir
    from ..models.loading import load_line
    from ..runs import point_latest

    with atomic_output_dir(opts.out, run=opts.run, force=opts.force) as tmp:
        extra = load_record(recs, per_model=combines_models(res) or len(recs) > 1) | {
            "total_seconds": round(time.perf_counter() - t0, 2)
        }
        figures = res.write(tmp, figures=opts.figures, extra=extra)
    if opts.out_root is not None:
        point_latest(opts.out)
    lines = [load_line(name, r) for name, r in recs.items()]
    return Ran(res, figures, time.perf_counter() - t0, lines, str(opts.out))


def prepare(config: StageConfig, opts: RunOptions) -> None:
    """Check ``config`` and ``opts`` (no model loaded) and let the stage decide, once, what its
    settings imply for the run (a preset's coordinate rule and dtype); then the defaults."""
    config.check()
    opts.check()
    config.settle(opts)
    opts.coords_rule = opts.coords_rule or "paper"
    opts.k_sigma = 3.0 if opts.k_sigma is None else opts.k_sigma


def settle_out(
    name: str, config: object, opts: RunOptions, models: Sequence[object] | None = None
) -> dict:
    """Decide, once, the settings that identify the run (``opts.run``: command ``name``,
    ``config``'s fields (or a dict of settings), ``opts`` but for how results are shown, ``models`` when several) and,
    without ``opts.out``, its own folder under ``opts.out_root`` (:mod:`sinkscope.runs`)."""
    import dataclasses

    from ..runs import PRESENTATION, run_dir, settings_of

    if isinstance(config, dict):
        cfg = config
    else:
        fields = dataclasses.fields(config) if dataclasses.is_dataclass(config) else ()
        cfg = {f.name: getattr(config, f.name) for f in fields}
    options = {
        f.name: getattr(opts, f.name)
        for f in dataclasses.fields(opts)
        if f.name not in PRESENTATION
    }
    run = {"command": name, "config": cfg, "options": options}
    if models is not None:
        run["models"] = list(models)
    opts.run = settings_of(run)
    if opts.out is None and opts.out_root is not None:
        opts.out = str(run_dir(opts.out_root, models or [opts.model], opts.run))
    return opts.run


def compute_stage(
    config: StageConfig, model: SinkModel, inputs: TokenizedInputs | None, opts: RunOptions
) -> StageResult:
    """The stage's result on a loaded model and inputs: facts decided once, then ``compute``."""
    facts = facts_for(config, model, inputs, opts)
    return config.compute(
        model, inputs, facts, band=opts.band, batch_size=opts.batch_size, progress=opts.progress
    )


def run_stage(config: StageConfig, opts: RunOptions) -> Ran:
    """``sinkscope <stage>``: check, load, decide the facts, compute and write ``opts.out``."""
    prepare(config, opts)
    settle_out(config.name, config, opts)
    t0 = time.perf_counter()
    model, inputs = load(
        opts, need_forward=config.needs_forward, weights_only=getattr(config, "weights_only", False)
    )
    res = compute_stage(config, model, inputs, opts)
    return _write(res, {model.name: model.record()}, opts, t0)


def run_models(config: StageConfig, opts: RunOptions, specs: Sequence[str]) -> Ran:
    """``compare`` / ``mitigate``: the stage on each model in turn (one in memory at a time, each
    with its own facts), combined into one result written atomically to ``opts.out``."""
    from ..io import check_output_dir

    prepare(config, opts)
    settle_out(config.name, config, opts, specs)
    if opts.out is not None:
        check_output_dir(opts.out, run=opts.run, force=opts.force)
    t0 = time.perf_counter()
    results, recs = [], {}
    for model, inputs in load_each(opts, specs):
        results.append(compute_stage(config, model, inputs, opts))
        recs[model.name] = model.record()
    return _write(type(results[0]).concat(results), recs, opts, t0)
