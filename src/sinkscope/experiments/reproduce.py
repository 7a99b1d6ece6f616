"""``sinkscope reproduce``: the whole study, and sinkscope's additions, on one model, as cached
stages under ``DIR`` and one self-contained ``DIR/report.html``.

Stages, in order (each writes ``DIR/stages/NAME/`` atomically, ``stage.json`` last):

=================  ====================================================================  =======
facts              massive coordinates (and the rule that chose them), creating block, q̄  weights
                   (decided once; every later stage reads them)                          (+inputs)
measure            BOS attention per example × layer × head, per dataset (Table 1a)      forward
circuit_weights    EPE and its massive coordinates, b_Q / key alignment, γ (Figs 2,4,7,8) weights
circuit_forward    Δ histograms, 4-term check, residual profile, EPE validation (1,3,6)  forward
interventions      Table 1 (a)..(j): overall / per dataset / all layers, relocation,     forward
                   loss cost, Fig 5
shared_query       the effective query bias q̄: its share of index 0's logit advantage    forward
mitigate           sink left vs loss added as b_Q, q̄, W_K rows, index 0 are scaled       forward
=================  ====================================================================  =======

A stage is reused when its ``stage.json`` carries the same *key*: a hash of the model's weights
and config, the token ids of the inputs (forward stages), the settings the stage reads, the keys
of the stages it builds on, and the sinkscope version. Anything else (``--force``, a changed
setting, other weights) recomputes it. Stages that the weights cannot support (a partial
checkpoint) are listed with the missing tensors.

>>> [s.name for s in STAGES]
['facts', 'measure', 'circuit_weights', 'circuit_forward', 'interventions', 'shared_query', 'mitigate']
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..errors import SinkscopeError
from ..io import atomic_output_dir, check_output_dir, claim_dir, clean_stale, exclusive_dir, signal_handlers, write_json_atomic
from ..metrics import resolve_band
from .mitigate import EDITS


@dataclass
class Settings:
    """What the stages read besides the model and the inputs (all recorded in the report)."""

    band: tuple[int, int] | None = None  # None: the paper's 3:11 of 12, scaled
    coords: list[int] | None = None  # None: the EPE rule (or the paper's for GPT-2 small without its MLP)
    k_sigma: float = 3.0
    seed: int = 0
    batch_size: int = 32
    strengths: tuple[float, ...] = (1.0, 0.5, 0.0)
    edits: tuple[str, ...] = EDITS
    sentence: str | None = None
    max_tokens: int = 40
    skip: tuple[str, ...] = ()

    def __post_init__(self):
        unknown = [x for x in self.skip if x not in STAGE_NAMES]
        if unknown:
            raise SinkscopeError(f"--skip {','.join(self.skip)}: unknown stage {', '.join(unknown)}; choose from {', '.join(STAGE_NAMES)}")
        if any(not 0 <= x <= 1 for x in self.strengths) or 1.0 not in self.strengths:
            raise SinkscopeError(f"strengths {self.strengths}: each must lie in [0, 1] and 1 (unedited) must be among them")
        if not self.edits or any(e not in EDITS for e in self.edits):
            raise SinkscopeError(f"edits {self.edits}: choose from {', '.join(EDITS)}")
        if self.batch_size < 1:
            raise SinkscopeError(f"--batch-size {self.batch_size} must be at least 1")


@dataclass
class Stage:
    name: str
    title: str
    forward: bool  # needs a forward pass (and inputs)
    reads: tuple[str, ...]  # the Settings fields its results depend on
    after: tuple[str, ...]  # stages whose results it needs
    run: Callable  # (ctx, tmp_dir) -> stage record (summary, figures, tables)
    uses: tuple[str, ...] = ()  # stages whose results it uses when they ran (part of its key, not required)
    reads_inputs: bool | Callable = False  # uses the inputs when there are any (a callable: model -> bool)


@dataclass
class StageOutcome:
    name: str
    title: str
    status: str  # ran | cached | skipped | not requested
    reason: str = ""
    seconds: float = 0.0  # compute time (of the run that made the cached result, for cached)
    record: dict = field(default_factory=dict)

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
    results: dict = field(default_factory=dict)  # stage name -> summary (finished stages)
    facts: object = None  # the run's CircuitFacts, set by the facts stage

    def stage_dir(self, name: str) -> Path:
        return self.out / "stages" / name


# --- the stages -------------------------------------------------------------------------------


def _record(res, ctx: Context, tmp: Path) -> dict:
    """A stage's record: the result's summary, the figures it wrote and its tables; the files
    are the ones ``sinkscope <command>`` writes (one ``write`` for both, with the same load record)."""
    from .run import combines_models, load_record

    figs = res.write(tmp, extra=load_record({ctx.model.name: ctx.model.record()}, per_model=combines_models(res)))
    return {"summary": res.summary(), "figures": figs, "tables": dict(res.tables)}


def _paper_fallback(model):
    """GPT-2 small whose checkpoint lacks the layer-0 MLP (no EPE): the paper's Fig 7 coordinates."""
    from ..analysis.facts import MassiveCoords
    from .paper import PAPER_COORDS, is_gpt2_small

    if is_gpt2_small(model.hf.config) and model.adapter.missing_tensors():
        return MassiveCoords(tuple(PAPER_COORDS), "the paper's Fig 7 (this checkpoint lacks the layer-0 MLP that the EPE needs)")
    return None


FACT_ARRAYS = ("norm0", "norm_other", "abs0", "median_abs", "signed0")


def _facts(ctx: Context, tmp: Path) -> dict:
    """The run's circuit facts, decided once (analysis.facts.resolve_facts) and read by every
    later stage: massive coordinates and their rule, the creating block, q̄."""
    from ..analysis.facts import resolve_facts

    st = ctx.settings
    facts = resolve_facts(ctx.model, ctx.inputs, coords=st.coords, k_sigma=st.k_sigma, band=ctx.band, q_bar=True,
                          fallback=_paper_fallback(ctx.model), batch_size=st.batch_size, progress=ctx.progress)
    tensors = {} if facts.q_bar is None else {"q_bar": facts.q_bar.float().contiguous()}
    if facts.profile is not None:
        tensors |= {k: torch.from_numpy(getattr(facts.profile, k)).contiguous() for k in FACT_ARRAYS}
    if tensors:
        save_file(tensors, str(tmp / "facts.safetensors"))  # data only, no pickle
    ctx.facts = facts
    return {"summary": facts.record() | {"q_bar_computed": facts.q_bar is not None}, "figures": {}, "tables": {"facts.safetensors": "q̄ and index 0's residual profile"} if tensors else {}}


def _load_facts(ctx: Context, summary: dict):
    """The facts of a cached facts stage (its record and ``facts.safetensors``)."""
    from ..analysis.facts import CircuitFacts, MassiveCoords
    from ..analysis.massive import ResidualProfile

    path = ctx.stage_dir("facts") / "facts.safetensors"
    t = {}
    if path.exists():
        try:
            t = load_file(str(path))
        except Exception as e:  # truncated or edited by hand
            raise SinkscopeError(f"the cached {path} cannot be read ({type(e).__name__}); rerun with --force to recompute it") from None
    def coords(rec: dict) -> MassiveCoords:
        return MassiveCoords(tuple(rec["coords"]) if rec["coords"] is not None else None, rec["rule"])

    mc, gc = coords(summary["massive_coords"]), coords(summary.get("gamma_coords") or summary["massive_coords"])
    prof = ResidualProfile(**{k: t[k].numpy() for k in FACT_ARRAYS}) if all(k in t for k in FACT_ARRAYS) else None
    return CircuitFacts(mc, summary["creating_block"], summary["creating_block_rule"], t.get("q_bar"), prof,
                        summary.get("k_sigma", ctx.settings.k_sigma), None if gc == mc else gc)


def _measure(ctx: Context, tmp: Path) -> dict:
    from .measure import MeasureConfig

    return _record(MeasureConfig(keys=(0, 1)).compute(ctx.model, ctx.inputs, band=ctx.band, batch_size=ctx.settings.batch_size,
                                                      progress=ctx.progress), ctx, tmp)


def _circuit_weights(ctx: Context, tmp: Path) -> dict:
    from .explain import ExplainConfig
    from .paper import PAPER_COORDS

    res = ExplainConfig(forward=False, seq_len=ctx.settings.max_tokens).compute(ctx.model, None, ctx.facts, band=ctx.band, progress=ctx.progress)
    epe0 = res.arrays.get("epe0")
    if epe0 is not None and epe0.shape[0] > max(PAPER_COORDS):  # for the paper's Fig 7 values
        res.data["epe"]["at_paper_coords"] = {str(c): float(epe0[c]) for c in PAPER_COORDS}
    return _record(res, ctx, tmp)


def _circuit_forward(ctx: Context, tmp: Path) -> dict:
    from .explain import ExplainConfig

    res = ExplainConfig(weights=False).compute(ctx.model, ctx.inputs, ctx.facts, band=ctx.band, batch_size=ctx.settings.batch_size,
                                               progress=ctx.progress)
    return _record(res, ctx, tmp)


def _interventions(ctx: Context, tmp: Path) -> dict:
    from .intervene import InterveneConfig

    st = ctx.settings
    cfg = InterveneConfig(preset="paper", seed=st.seed, sentence=st.sentence, max_tokens=st.max_tokens)
    return _record(cfg.compute(ctx.model, ctx.inputs, ctx.facts, band=ctx.band, batch_size=st.batch_size, progress=ctx.progress), ctx, tmp)


def _shared_query(ctx: Context, tmp: Path) -> dict:
    from ..analysis.shared_query import shared_query
    from ..report.circuit import shared_query_layers
    from ..report.formats import figure_name

    sq = shared_query(ctx.model, ctx.inputs, batch_size=ctx.settings.batch_size, progress=ctx.progress)
    masks = ctx.inputs.domain_masks()
    frame = sq.frame(masks)
    frame.to_csv(tmp / "shared_query_per_head.csv", index=False, float_format="%.6g")
    pooled = {d: sq.pooled(ctx.band, torch.as_tensor(np.nonzero(m)[0])) for d, m in masks.items()}
    s = {"pooled": pooled, "has_query_bias": sq.b_Q is not None, "layer_band": list(ctx.band),
         "per_layer": frame[frame.domain == "all"].groupby("layer")[["shared_query_share", "bq_share", "index0_advantage"]].mean().reset_index().to_dict(orient="records")}
    name = figure_name("shared_query")
    figs = {name: shared_query_layers(frame[frame.domain == "all"], ctx.band, tmp / name)}
    return {"summary": s, "figures": figs, "tables": {"shared_query_per_head.csv": "per domain × layer × head"}}


def _mitigate(ctx: Context, tmp: Path) -> dict:
    from .mitigate import MitigateConfig

    st = ctx.settings
    cfg = MitigateConfig(strengths=st.strengths, edits=st.edits)
    return _record(cfg.compute(ctx.model, ctx.inputs, ctx.facts, band=ctx.band, batch_size=st.batch_size, progress=ctx.progress), ctx, tmp)


STAGES: list[Stage] = [
    Stage("facts", "Circuit facts: massive coordinates, creating block, q̄", False, ("band", "coords", "k_sigma"), (), _facts, reads_inputs=True),
    Stage("measure", "Sink strength", True, ("band",), (), _measure),
    Stage("circuit_weights", "The circuit in the weights: EPE, b_Q / key alignment, γ (Figs 2, 4, 7, 8)", False, ("band", "max_tokens"), ("facts",),
          _circuit_weights, reads_inputs=lambda model: not model.adapter.info().has_query_bias),  # no b_Q: γ with q̄, from the inputs
    Stage("circuit_forward", "The circuit in the forward pass: Δ, EPE validation, where index 0 becomes special", True, ("band",), ("facts",), _circuit_forward),
    Stage("interventions", "Interventions: Table 1, relocation, loss cost, Fig 5", True, ("band", "seed", "sentence", "max_tokens"), ("facts",), _interventions),
    Stage("shared_query", "The effective query bias (any architecture)", True, ("band",), (), _shared_query),
    Stage("mitigate", "Mitigation trade-off: sink removed per nat", True, ("band", "strengths", "edits"), ("facts",), _mitigate),
]
STAGE_NAMES = tuple(s.name for s in STAGES)


# --- keys -------------------------------------------------------------------------------------


def weights_hash(model) -> str:
    """SHA-256 of the config and every loaded tensor (name, dtype, shape, bytes); a partial
    checkpoint's missing tensors (on ``meta``) are left out."""
    h = hashlib.sha256(model.hf.config.to_json_string(use_diff=False).encode())
    for name, t in sorted(model.hf.state_dict().items()):
        if t.is_meta:
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def inputs_hash(inputs) -> str | None:
    if inputs is None:
        return None
    h = hashlib.sha256(inputs.ids.numpy().astype(np.int64).tobytes())
    h.update(inputs.lengths.numpy().astype(np.int64).tobytes())
    h.update("\x1f".join(inputs.domains).encode())
    return h.hexdigest()


CACHE_FORMAT = 5  # 5: summaries record how the model was loaded (dtype, source); 4: the facts stage; 3: the paper's (i) coordinates, (j) draw, Δ std and EPE medians; 2: q_bar as safetensors


def _reads_inputs(stage: Stage, model) -> bool:
    r = stage.reads_inputs
    return bool(r(model)) if callable(r) and model is not None else (r is True)


def stage_key(stage: Stage, w_hash: str, in_hash: str | None, settings: Settings, upstream: dict[str, str], model=None) -> str:
    from .. import __version__
    from ..report.formats import current_format

    blob = {
        "stage": stage.name,
        "version": __version__,
        "cache_format": CACHE_FORMAT,
        "weights": w_hash,
        "inputs": in_hash if stage.forward or _reads_inputs(stage, model) else None,
        "settings": {k: getattr(settings, k) for k in stage.reads},
        "after": {k: upstream.get(k) for k in stage.after + stage.uses},
        "figure_format": None if stage.name == "facts" else current_format(),  # a cached stage's figures are in the run's format
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=list).encode()).hexdigest()[:20]


# --- running ----------------------------------------------------------------------------------


def _read_record(d: Path) -> dict | None:
    try:
        with open(d / "stage.json") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return None if np.isnan(x) else float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def prepare_out(out: str | os.PathLike) -> Path:
    """Create ``out`` (or reuse an earlier reproduce directory); refuse anything else."""
    out = check_output_dir(out, kind="reproduce")
    claim_dir(out, "reproduce")
    (out / "stages").mkdir(exist_ok=True)
    return out


@contextlib.contextmanager
def interrupt_guard():
    """Ctrl-C raises ``KeyboardInterrupt`` at once, as usual, and is also remembered: Python can
    swallow that exception (when the signal lands in a weakref callback or ``__del__`` during
    garbage collection, it only prints "Exception ignored"), so the run calls the yielded
    ``check()`` at every stage boundary and stops there. Either way no stage is half-written."""
    hit: list[int] = []

    def check() -> None:
        if hit:
            raise KeyboardInterrupt

    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield check  # a caller's own handler: not ours to replace
        return

    def handler(signum, frame):
        hit.append(signum)
        raise KeyboardInterrupt

    with signal_handlers(handler):
        yield check


def versions() -> dict:
    import matplotlib
    import pandas
    import transformers

    from .. import __version__

    return {"sinkscope": __version__, "python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "pandas": pandas.__version__, "matplotlib": matplotlib.__version__,
            "platform": platform.platform(), "torch_threads": torch.get_num_threads()}


def resolve_defaults(model: str | None, inputs: str | None) -> tuple[str, str, list[str]]:
    """``reproduce``'s defaults: ``(model spec, inputs spec, notes for the report)``. No model:
    ``gpt2`` when the hub answers, else the embedded model (with a note saying so). No inputs:
    the paper's 300 texts for GPT-2 small (``paper-offline``: shipped, no hub needed), else the
    offline corpus."""
    from ..models.loading import hub_reachable
    from .paper import is_gpt2_small

    notes: list[str] = []
    if model is None:
        hub, why = hub_reachable("gpt2")
        model = "gpt2" if hub else "default"
        if not hub:
            notes.append(f"The Hugging Face hub is not reachable ({why}), so this run uses the embedded default model instead of gpt2; "
                         "pass --model gpt2 once online, or --model PATH for a local GPT-2.")
    if inputs is None:
        inputs = "default"
        if model != "default" and not model.startswith("packaged:") and not model.endswith((".gguf", ".safetensors")):
            from transformers import AutoConfig

            try:
                cfg = AutoConfig.from_pretrained(model)
            except (OSError, ValueError):
                cfg = None
            if cfg is not None and is_gpt2_small(cfg):
                inputs = "paper-offline"
    return model, inputs, notes


def reproduce(model, inputs, out: str | os.PathLike, *, settings: Settings | None = None, force: bool = False, progress: bool = True,
              notes: list[str] | None = None, run_info: dict | None = None) -> ReproduceResult:
    """Run every stage the model allows (reusing finished ones) and write ``out/report.html``.

    ``inputs`` may be None for a weight-only run (forward stages are then skipped with the reason).
    ``notes`` (e.g. "the hub was unreachable, used the embedded model") go to the report's top.
    """
    t0 = time.perf_counter()
    resolve_band((settings or Settings()).band, model.adapter.n_layers)  # a bad --layers fails before --out is made
    out = prepare_out(out)
    with exclusive_dir(out, "sinkscope reproduce"):
        clean_stale(out / "stages")  # left by a killed run (SIGKILL); Ctrl-C cleans up its own
        return _reproduce(model, inputs, out, settings or Settings(), force, progress, notes, run_info, t0)


def _reproduce(model, inputs, out: Path, settings: Settings, force: bool, progress: bool, notes, run_info, t0: float) -> ReproduceResult:
    from ..report.html import write_report

    ad = model.adapter
    band = resolve_band(settings.band, ad.n_layers)
    ctx = Context(model, inputs, settings, band, out, progress=progress)
    w_hash = weights_hash(model)
    in_hash = inputs_hash(inputs)
    forward_reason = None
    try:
        ad.require_forward()
        if inputs is None:
            forward_reason = "no inputs (a weight-only run)"
    except SinkscopeError as e:
        forward_reason = str(e)
    keys: dict[str, str] = {}
    outcomes: list[StageOutcome] = []
    bar = tqdm(total=len(STAGES), desc="reproduce", unit="stage", disable=not progress, position=0)
    with interrupt_guard() as check, contextlib.closing(bar):
        for st in STAGES:
            check()
            bar.set_postfix_str(st.name)
            oc = StageOutcome(st.name, st.title, "skipped")
            missing_dep = [a for a in st.after if a not in ctx.results]
            if st.name in settings.skip:
                oc.status, oc.reason = "not requested", "left out with --skip"
            elif st.forward and forward_reason:
                oc.reason = forward_reason
            elif missing_dep:
                oc.reason = f"needs the {', '.join(missing_dep)} stage(s), which did not run"
            else:
                key = keys[st.name] = stage_key(st, w_hash, in_hash, settings, keys, model)
                d = ctx.stage_dir(st.name)
                rec = None if force else _read_record(d)
                if rec is not None and rec.get("key") == key and rec.get("status") == "done":
                    oc.status, oc.seconds, oc.record = "cached", rec.get("seconds", 0.0), rec
                    if st.name == "facts":
                        ctx.facts = _load_facts(ctx, rec["summary"])
                else:
                    t = time.perf_counter()
                    with atomic_output_dir(d) as tmp:
                        rec = st.run(ctx, tmp)
                        rec = _jsonable({"stage": st.name, "title": st.title, "key": key, "status": "done", "seconds": round(time.perf_counter() - t, 2),
                                         "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), **rec})
                        write_json_atomic(tmp / "stage.json", rec)
                    oc.status, oc.seconds, oc.record = "ran", rec["seconds"], rec
                ctx.results[st.name] = oc.record.get("summary", {})
                if st.name == "facts":  # later stages depend on what the facts are, not on how they were found
                    keys["facts"] = hashlib.sha256(json.dumps(ctx.results["facts"], sort_keys=True).encode()).hexdigest()[:20]
            outcomes.append(oc)
            bar.update(1)
        check()
    total = time.perf_counter() - t0
    run = {
        "model": model.name,
        "model_info": ad.describe(),
        **model.record(),  # model_source (hub revision and commit), dtype, device_map, devices
        "weights_sha256": w_hash,
        "inputs": getattr(inputs, "spec", None),
        "n_examples": len(inputs) if inputs is not None else 0,
        "seq_len": int(inputs.ids.shape[1]) if inputs is not None else None,
        "inputs_sha256": in_hash,
        "settings": asdict(settings) | {"band": list(band)},
        "versions": versions(),
        "stages": [{"name": o.name, "status": o.status, "seconds": o.seconds, "reason": o.reason} for o in outcomes],
        "seconds_this_run": round(total, 2),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "notes": list(notes or []),
        **(run_info or {}),
    }
    report = write_report(out, model, inputs, outcomes, run)
    run["seconds_this_run"] = round(time.perf_counter() - t0, 2)
    write_json_atomic(out / "run.json", _jsonable(run))
    return ReproduceResult(out, report, outcomes, time.perf_counter() - t0, run)
