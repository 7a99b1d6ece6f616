"""Typed records of the stages' summaries: what the report, the readings and paper-vs-run read.

Each stage's ``summary()`` (``summary.json``, ``stage.json``'s ``summary``) is read back into a
frozen dataclass by :func:`read_record`: a field the stage always writes is required (a cached
record that lacks it is one clear error, not a ``KeyError`` deep in the report); a part a stage
may skip is ``None``, and the stage's ``skipped`` list says why. JSON's ``null`` for a float is
NaN (sinkscope writes strict JSON). ``tests/test_records.py`` reads every stage's live summary,
so the records and the summaries cannot drift apart.

>>> m = read_record("measure", {"layer_band": [3, 11], "uniform_baseline": 0.05, "n_examples": 30,
...     "bos_attention": {"all": {"mean": 0.5, "se": 0.01, "n": 30}}})
>>> m.bos_attention["all"].mean, m.band_text
(0.5, '3..10')
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from ..errors import SinkscopeError

NAN = float("nan")


class RecordError(SinkscopeError):
    """A stage record that does not have the shape this sinkscope writes."""


# --- shared pieces ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """An aggregate (``metrics.aggregate``): mean, SE, ±2SE interval, count, % of a baseline."""

    mean: float
    se: float = NAN
    n: int = 0
    ci_low: float = NAN
    ci_high: float = NAN
    pct_baseline: float | None = None


@dataclass(frozen=True)
class Coords:
    coords: list[int] | None
    rule: str


@dataclass(frozen=True)
class Skip:
    stage: str
    reason: str


@dataclass(frozen=True)
class Band:
    """A record with a layer band ``[start, stop)``."""

    layer_band: list[int]
    model_info: dict[str, Any] = field(default_factory=dict)  # the adapter's describe()

    @property
    def band_text(self) -> str:
        return f"{self.layer_band[0]}..{self.layer_band[1] - 1}"


# --- one record per stage ---------------------------------------------------------------------


@dataclass(frozen=True)
class FactsRecord:
    massive_coords: Coords
    creating_block: int | None
    creating_block_rule: str
    gamma_coords: Coords | None = None
    q_bar_computed: bool = False
    k_sigma: float = 3.0


@dataclass(frozen=True)
class MeasureRecord(Band):
    uniform_baseline: float = NAN
    n_examples: int = 0
    bos_attention: dict[str, Stat] = field(default_factory=dict)
    bos_attention_all_layers: dict[str, Stat] = field(default_factory=dict)
    bos_attention_per_layer: dict[str, list[float]] = field(default_factory=dict)
    sink_rate: dict[str, float] = field(default_factory=dict)
    seq_len: int | None = None


@dataclass(frozen=True)
class Spread:
    mean: float
    median: float
    count: int


@dataclass(frozen=True)
class Gamma:
    massive: Spread
    other: Spread
    coords: list[int]
    layers: list[int]
    ratio_of_means: float

    @property
    def zero(self) -> bool:
        """γ is zero everywhere (no ratio): the query vector reads nothing through W_K."""
        return math.isnan(self.ratio_of_means)


@dataclass(frozen=True, kw_only=True)
class Validation:
    """EPE validation medians (None: not computed, e.g. a weight-only run)."""

    validation_median_index0: float | None = None
    validation_min_median_other: float | None = None
    validation_global_median: float | None = None
    validation_global_median_other: float | None = None


@dataclass(frozen=True, kw_only=True)
class Epe(Validation):
    massive_coords: list[int]
    massive_values: list[float]
    norm_index0: float
    median_norm_other: float
    massive_rule: str = (
        ""  # the rule of massive_coords (the paper's Fig 7: σ with the population std)
    )
    at_paper_coords: dict[str, float] = field(default_factory=dict)
    validation_full_block: Validation | None = None


@dataclass(frozen=True)
class Alignment:
    index0_mean_cos: float
    other_mean_cos: float
    index0_share_positive: float
    index0_p10_p90: list[float]
    other_median_cos: float


@dataclass(frozen=True)
class Residual:
    creating_block: int | None
    massive_coords: list[int]
    massive_values: list[float]
    max_norm_ratio: float
    max_norm_ratio_block: int


@dataclass(frozen=True)
class DeltaLayer:
    layer: int
    index0_p10: float
    index0_median: float
    max_other_p90: float
    index0_mean: float
    other_mean: float
    index0_p10_above_all_other_p90: bool


@dataclass(frozen=True)
class Delta:
    index0_mean: float
    other_mean: float
    layers_index0_p10_above_all_other_p90: list[int]
    per_layer: list[DeltaLayer]
    std_estimator: str = ""

    def layer(self, layer: int) -> DeltaLayer | None:
        return next((r for r in self.per_layer if r.layer == layer), None)


@dataclass(frozen=True)
class DecompositionCheck:
    max_abs_error: float
    max_abs_score: float
    n_scores: int = 0


@dataclass(frozen=True)
class ExplainRecord(Band):
    """``circuit_weights`` and ``circuit_forward`` (and ``sinkscope explain``)."""

    skipped: list[Skip] = field(default_factory=list)
    coords_source: str = ""
    gamma_query: str = "b_Q"
    epe: Epe | None = None
    gamma: Gamma | None = None
    alignment: Alignment | None = None
    residual: Residual | None = None
    delta: Delta | None = None
    decomposition_check: DecompositionCheck | None = None

    def why_not(self, part: str) -> str | None:
        """The reason the stage recorded for skipping ``part`` (None: not recorded)."""
        return next((s.reason for s in self.skipped if s.stage in (part, part.split("_")[0])), None)


@dataclass(frozen=True)
class Cell:
    """One Table 1 cell: an intervention on one dataset and layer scope."""

    description: str
    applicable: bool
    reason: str | None = None
    mean: float = NAN
    se: float = NAN
    pct: float = NAN
    attn_to_1: float = NAN
    ce: float = NAN
    delta_ce: float = NAN
    delta_ce_se: float = NAN


@dataclass(frozen=True)
class InterventionsRecord(Band):
    table1: dict[str, dict[str, dict[str, Cell]]] = field(
        default_factory=dict
    )  # scope -> dataset -> id -> cell
    coords: list[int] | None = None
    coords_rule: str = ""
    n_examples: int = 0

    def cell(self, rid: str, scope: str = "mid", dataset: str = "all") -> Cell | None:
        return self.table1.get(scope, {}).get(dataset, {}).get(rid)

    def value(self, rid: str, scope: str = "mid", dataset: str = "all") -> Cell | None:
        """The cell when the intervention applied, else None."""
        c = self.cell(rid, scope, dataset)
        return c if c is not None and c.applicable else None


@dataclass(frozen=True)
class Pooled:
    shared_query_share: float
    mean_advantage: float
    bq_share: float = NAN


@dataclass(frozen=True)
class SharedQueryRecord(Band):
    pooled: dict[str, Pooled] = field(default_factory=dict)
    has_query_bias: bool = False


@dataclass(frozen=True)
class Best:
    model: str
    best_edit: str
    strength: float
    removed: float
    delta_ce: float
    sink_removed_per_nat: float


@dataclass(frozen=True)
class TradeoffRow:
    edit: str
    strength: float
    bos_attention: float
    pct_baseline: float
    delta_ce: float
    model: str = ""


@dataclass(frozen=True)
class MitigateRecord:
    best: list[Best] = field(default_factory=list)
    rows: list[TradeoffRow] = field(default_factory=list)
    not_applicable: dict[str, dict[str, str]] = field(
        default_factory=dict
    )  # model -> edit -> reason


# --- reading ----------------------------------------------------------------------------------


def read_record(record: type | str | None, summary: dict, where: str | None = None) -> Any:
    """The typed record of a stage's ``summary`` (unknown keys are ignored): ``record`` is the
    record class (a stage's ``record``), or the name of a ``reproduce`` step / a stage (looked up
    in the registry); None returns the summary itself (a stage without a record)."""
    if isinstance(record, str):
        where = where or record
        record = record_type(record)
    if record is None:
        return summary
    return _read(record, summary, where or record.__name__)


def record_type(name: str) -> type | None:
    """The record class of a ``reproduce`` step (``facts``, ``measure``, ``circuit_weights``...)
    or a stage (``explain``, ``intervene``...), from the registry."""
    from ..registry import stages, steps

    if name == "facts":
        return FactsRecord
    for st, cls in steps():
        if st.name == name:
            return st.record or cls.record
    reg = stages()
    if name in reg:
        return reg[name].record
    raise RecordError(f"no stage or reproduce step named '{name}'")


def _read(tp, x, where: str):
    if tp is Any:
        return x
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if x is None and type(None) in args:
            return None
        return _read(next(a for a in args if a is not type(None)), x, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(x, dict):
            raise RecordError(f"{where} is not an object; rerun with --force to recompute it")
        hints = typing.get_type_hints(tp)
        kw = {}
        for f in dataclasses.fields(tp):
            if f.name in x:
                kw[f.name] = _read(hints[f.name], x[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecordError(
                    f"{where} has no '{f.name}' (written by another sinkscope?); rerun with --force to recompute it"
                )
        return tp(**kw)
    if origin is dict:
        return {str(k): _read(args[1], v, f"{where}[{k}]") for k, v in _as(dict, x, where).items()}
    if origin is list:
        return [_read(args[0], v, f"{where}[{i}]") for i, v in enumerate(_as(list, x, where))]
    if tp is float:
        return NAN if x is None else float(_as((int, float), x, where))
    if tp is int:
        return int(_as(int, x, where))
    if tp is bool:
        return bool(_as(bool, x, where))
    if tp is str:
        return str(x)
    return x


def _as(kind, x, where: str):
    if not isinstance(x, kind) or (kind is int and isinstance(x, bool)):
        raise RecordError(
            f"{where} is {type(x).__name__}, not {getattr(kind, '__name__', kind)}; rerun with --force to recompute it"
        )
    return x


def read_baseline(path: str) -> dict:
    """A ``measure`` summary.json to compare with: its ``bos_attention`` means, checked here."""
    import json
    import math

    try:
        with open(path, encoding="utf-8") as f:
            baseline = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SinkscopeError(
            f"--baseline {path} is not a readable summary.json ({type(e).__name__}); pass a sinkscope measure summary"
        ) from None

    def means_ok(block) -> bool:  # {domain: {"mean": finite number or null, ...}, ...}
        return (
            isinstance(block, dict)
            and bool(block)
            and all(
                isinstance(v, dict)
                and (
                    v.get("mean") is None
                    or (isinstance(v.get("mean"), (int, float)) and math.isfinite(v["mean"]))
                )
                for v in block.values()
            )
        )

    if (
        not isinstance(baseline, dict)
        or not means_ok(baseline.get("bos_attention"))
        or (
            "bos_attention_all_layers" in baseline
            and not means_ok(baseline["bos_attention_all_layers"])
        )
    ):
        raise SinkscopeError(
            f"--baseline {path} has no bos_attention {{domain: {{mean: number}}}} block; pass the summary.json of sinkscope measure"
        )
    return baseline
