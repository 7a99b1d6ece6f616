"""``sinkscope reproduce``: the whole study, and sinkscope's additions, on one model, as cached
steps under ``DIR`` and one self-contained ``DIR/report.html``.

The steps are the registry's (:func:`sinkscope.registry.steps`): every registered stage's
``reproduce`` steps in their ``order``, after ``facts`` (massive coordinates and their rule, the
creating block and q̄, decided once; every later step reads them). Built in:

=================  ====================================================================  =======
facts              massive coordinates (and the rule that chose them), creating block, q̄  weights
measure            BOS attention per example × layer × head, per dataset (Table 1a)      forward
circuit_weights    EPE and its massive coordinates, b_Q / key alignment, γ (Figs 2,4,7,8) weights
circuit_forward    Δ histograms, 4-term check, residual profile, EPE validation (1,3,6)  forward
interventions      Table 1 (a)..(j): overall / per dataset / all layers, relocation,     forward
                   loss cost, Fig 5
shared_query       the effective query bias q̄: its share of index 0's logit advantage    forward
mitigate           sink left vs loss added as b_Q, q̄, W_K rows, index 0 are scaled       forward
=================  ====================================================================  =======

Each writes ``DIR/stages/NAME/`` atomically, ``stage.json`` last, and is reused while its key
matches (:mod:`sinkscope.studies.stage_cache`); steps the weights cannot support (a partial
checkpoint) are listed with the reason.

>>> [s.name for s in plan()][:7]
['facts', 'measure', 'circuit_weights', 'circuit_forward', 'interventions', 'shared_query', 'mitigate']
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import SinkscopeError
from ..io import (
    atomic_output_dir,
    check_output_dir,
    claim_dir,
    clean_stale,
    exclusive_dir,
    interrupt_guard,
    write_json_atomic,
)
from .reproduce_facts import load_facts as _load_facts  # noqa: F401  (tests read cached facts)
from .reproduce_plan import (  # noqa: F401
    PlannedStep,
    Settings,
    plan,
    reproduce_options,
    resolve_defaults,
)

if TYPE_CHECKING:
    from ..data import TokenizedInputs
    from ..models import SinkModel
from .stage_cache import (  # noqa: F401  (re-exported: tests and tools key stages here)
    CACHE_FORMAT,
    _jsonable,
    _read_record,
    cached_record,
    inputs_hash,
    stage_key,
    tokenizer_hash,
    versions,
    weights_hash,
)


@dataclass
class StageOutcome:
    name: str
    title: str
    status: str  # ran | cached | skipped | not requested
    reason: str = ""
    seconds: float = 0.0  # compute time (of the run that made the cached result, for cached)
    record: dict = field(default_factory=dict)
    record_type: type | None = None  # what the report reads the summary as
    reading: Callable | None = None
    section: Callable | None = None
    source: str = "sinkscope"  # a plugin's distribution: its section may fail without the page

    @property
    def dir(self) -> str:
        return f"stages/{self.name}"


@dataclass
class ReproduceResult:
    out: Path
    report: Path
    stages: list[StageOutcome]
    seconds: float
    run: dict

    def outcome(self, name: str) -> StageOutcome:
        return next(s for s in self.stages if s.name == name)


@dataclass
class Context:
    model: object
    inputs: object  # TokenizedInputs or None
    settings: Settings
    band: tuple[int, int]
    out: Path
    progress: bool = True
    results: dict = field(default_factory=dict)  # step name -> summary (finished steps)
    facts: object = None  # the run's CircuitFacts, set by the facts step

    def stage_dir(self, name: str) -> Path:
        return self.out / "stages" / name


def __getattr__(name: str):  # STAGES / STAGE_NAMES: the plan as it stands (plugins included)
    if name == "STAGES":
        return plan()
    if name == "STAGE_NAMES":
        return tuple(s.name for s in plan())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- running ----------------------------------------------------------------------------------


def prepare_out(out: str | os.PathLike, run: dict | None = None, force: bool = False) -> Path:
    """Create ``out`` (or reuse an earlier reproduce directory of the same ``run``, of any run
    with ``force``); refuse anything else."""
    out = check_output_dir(out, kind="reproduce", run=run, force=force)
    claim_dir(out, "reproduce", run)
    (out / "stages").mkdir(exist_ok=True)
    return out


def reproduce(
    model: SinkModel,
    inputs: TokenizedInputs,
    out: str | os.PathLike,
    *,
    settings: Settings | None = None,
    force: bool = False,
    progress: bool = True,
    notes: list[str] | None = None,
    run_info: dict | None = None,
    run: dict | None = None,
    replace: bool = False,
) -> ReproduceResult:
    """Run every stage the model allows (reusing finished ones) and write ``out/report.html``.
    ``run``: the settings that identify the run (:func:`sinkscope.stages.runner.settle_out`);
    an ``out`` that holds a different run is refused unless ``replace``. ``force``: recompute
    every stage, even one whose cached result matches.

    ``inputs`` may be None for a weight-only run (forward stages are then skipped with the reason).
    ``notes`` (e.g. "the hub was unreachable, used the embedded model") go to the report's top.
    """
    from ..metrics import resolve_band

    t0 = time.perf_counter()
    resolve_band(
        (settings or Settings()).band, model.adapter.n_layers
    )  # a bad --layers fails before --out is made
    out = prepare_out(out, run, replace)
    with exclusive_dir(out, "sinkscope reproduce"):
        clean_stale(out / "stages")  # left by a killed run (SIGKILL); Ctrl-C cleans up its own
        return _reproduce(
            model, inputs, out, settings or Settings(), force, progress, notes, run_info, t0
        )


def _reproduce(
    model,
    inputs,
    out: Path,
    settings: Settings,
    force: bool,
    progress: bool,
    notes,
    run_info,
    t0: float,
) -> ReproduceResult:
    from tqdm.auto import tqdm

    from ..metrics import resolve_band
    from ..report.html import write_report

    ad = model.adapter
    band = resolve_band(settings.band, ad.n_layers)
    ctx = Context(model, inputs, settings, band, out, progress=progress)
    hashes = (weights_hash(model), inputs_hash(inputs), tokenizer_hash(model))
    forward_reason = None
    try:
        ad.require_forward()
        if inputs is None:
            forward_reason = "no inputs (a weight-only run)"
    except SinkscopeError as e:
        forward_reason = str(e)
    keys: dict[str, str] = {}
    outcomes: list[StageOutcome] = []
    steps = plan()
    bar = tqdm(total=len(steps), desc="reproduce", unit="stage", disable=not progress, position=0)
    with interrupt_guard() as check, contextlib.closing(bar):
        for st in steps:
            check()
            bar.set_postfix_str(st.name)
            outcomes.append(_outcome(st, ctx, hashes, keys, forward_reason, force))
            bar.update(1)
        check()
    return _finish(
        model, inputs, out, settings, band, outcomes, hashes, notes, run_info, t0, write_report
    )


def _outcome(st: PlannedStep, ctx: Context, hashes, keys: dict, forward_reason, force: bool):
    """Run, reuse or skip one step; its outcome (and its key in ``keys``)."""
    from .reproduce_facts import load_facts

    oc = StageOutcome(
        st.name, st.title, "skipped", record_type=st.record, reading=st.reading,
        section=st.section, source=getattr(st.config_cls, "source", "sinkscope"),
    )  # fmt: skip
    missing_dep = [a for a in st.after if a not in ctx.results]
    if st.name in ctx.settings.skip:
        oc.status, oc.reason = "not requested", "left out with --skip"
        return oc
    if st.forward and forward_reason:
        oc.reason = forward_reason
        return oc
    if missing_dep:
        oc.reason = f"needs the {', '.join(missing_dep)} stage(s), which did not run"
        return oc
    w_hash, in_hash, tok_hash = hashes
    key = keys[st.name] = stage_key(
        st, w_hash, in_hash, ctx.settings, keys, ctx.model, tokenizer=tok_hash
    )
    d = ctx.stage_dir(st.name)
    rec = None if force else cached_record(st, d, key)
    if rec is not None:
        oc.status, oc.seconds, oc.record = "cached", rec.get("seconds", 0.0), rec
        if st.name == "facts":
            ctx.facts = load_facts(ctx, rec["summary"])
    else:
        t = time.perf_counter()
        with atomic_output_dir(d) as tmp:
            rec = st.run(ctx, tmp)
            rec = _jsonable(
                {
                    "stage": st.name,
                    "title": st.title,
                    "key": key,
                    "status": "done",
                    "seconds": round(time.perf_counter() - t, 2),
                    "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    **rec,
                }
            )
            write_json_atomic(tmp / "stage.json", rec)
        oc.status, oc.seconds, oc.record = "ran", rec["seconds"], rec
    ctx.results[st.name] = oc.record.get("summary", {})
    if st.name == "facts":  # later steps depend on what the facts are, not on how they were found
        blob = json.dumps(ctx.results["facts"], sort_keys=True).encode()
        keys["facts"] = hashlib.sha256(blob).hexdigest()[:20]
    return oc


def _finish(
    model,
    inputs,
    out: Path,
    settings: Settings,
    band,
    outcomes,
    hashes,
    notes,
    run_info,
    t0: float,
    write_report,
) -> ReproduceResult:
    """``run.json`` and ``report.html`` of the run."""
    w_hash, in_hash, tok_hash = hashes
    ad = model.adapter
    total = time.perf_counter() - t0
    run = {
        "model": model.name,
        "model_info": ad.describe(),
        **model.record(),  # model_source (hub revision and commit), dtype, device_map, devices
        "weights_sha256": w_hash,
        "tokenizer_sha256": tok_hash,
        "inputs": getattr(inputs, "spec", None),
        "n_examples": len(inputs) if inputs is not None else 0,
        "seq_len": int(inputs.ids.shape[1]) if inputs is not None else None,
        "inputs_sha256": in_hash,
        "settings": settings.record() | {"band": list(band)},
        "versions": versions(),
        "stages": [
            {"name": o.name, "status": o.status, "seconds": o.seconds, "reason": o.reason}
            for o in outcomes
        ],
        "seconds_this_run": round(total, 2),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "notes": list(notes or []),
        **(run_info or {}),
    }
    report = write_report(out, model, inputs, outcomes, run)
    run["seconds_this_run"] = round(time.perf_counter() - t0, 2)
    write_json_atomic(out / "run.json", _jsonable(run))
    return ReproduceResult(out, report, outcomes, time.perf_counter() - t0, run)
