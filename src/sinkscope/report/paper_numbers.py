"""The table of the study's numbers (``shared/docs/paper-notes.md``): one :class:`PaperNumber` per
number, with the getter that finds this run's counterpart in the stage records. Built one group
of the paper at a time; :mod:`sinkscope.report.paper` compares them with a run.

>>> len(PAPER_NUMBERS), PAPER_NUMBERS[0].label
(53, 'BOS attention (layer band, all inputs)')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..interventions.labels import PAPER_TABLE1

# the massive coordinates of GPT-2 small's EPE_0 (paper Fig 7); the γ split uses them when the
# EPE cannot be computed (a partial checkpoint without the layer-0 MLP)
PAPER_COORDS = [138, 378, 447]


@dataclass(frozen=True)
class PaperNumber:
    group: str
    label: str
    paper: Any  # float, or a list for sets
    get: Callable[
        [dict], Any
    ]  # stage summaries -> this run's value (raises NotComputed when a part was skipped)
    digits: int = 3  # decimals the paper prints
    tol: float | None = None  # explicit tolerance for "≈" values
    stage: str = ""

    @property
    def setting(self) -> str:
        """The paper's setting of this number."""
        if self.stage == "circuit_weights":
            return "GPT-2 small weights" + (", W_K rows 138, 378, 447" if "γ" in self.group else "")
        extra = ", W_K rows 138, 378, 447" if self.label.startswith("(i)") else ""
        scope = "all 12 layers" if "all-layer" in self.label else "layers 3..10"
        return f"GPT-2 small, {scope}, 300 inputs × 40 tokens{extra}"


class NotComputed(LookupError):
    """This run's stage ran but did not compute the number; the message says why."""


# --- getters: stage records -> this run's value ---------------------------------------------------


def _part(r: dict, stage: str, part: str):
    """Part ``part`` of stage ``stage``'s typed record (:mod:`.records`), or
    :class:`NotComputed` with the reason the stage recorded for skipping it."""
    rec = r[stage]
    x = getattr(rec, part)  # an unknown part is a bug: AttributeError
    if x is not None:
        return x
    why = rec.why_not(part) if hasattr(rec, "why_not") else None
    raise NotComputed(
        f"not computed here: {why}" if why else f"not computed here ({stage} has no {part})"
    )


def _g(stage, part, *path):
    """A getter for ``records[stage].part.path...`` (dict entries by key): a part the stage
    skipped is :class:`NotComputed` with its reason; anything else missing is a bug and raises."""

    def get(r):
        x = _part(r, stage, part)
        for p in path:
            x = x[p] if isinstance(x, dict) else getattr(x, p)
        return x

    return get


def _t1(rid, field="mean", dataset="all", scope="mid"):
    def get(r):
        iv = r["interventions"]
        if dataset not in iv.table1[scope]:
            raise NotComputed(f"not computed here: no {dataset} inputs")
        c = iv.table1[scope][dataset][rid]
        if not c.applicable:
            raise NotComputed(f"not applicable here: {c.reason}")
        return getattr(c, field)

    return get


def _layer(layer, field):
    def get(r):
        row = _part(r, "circuit_forward", "delta").layer(layer)
        if row is None:
            raise NotComputed(f"not computed here: layer {layer} is outside this run's band")
        return getattr(row, field)

    return get


def _dataset(ds):
    def get(r):
        block = _part(r, "measure", "bos_attention")
        if ds not in block:
            raise NotComputed(f"not computed here: this run has no {ds} inputs")
        return block[ds].mean

    return get


def _at_paper_coord(c):
    def get(r):
        e = _part(r, "circuit_weights", "epe")
        if str(c) not in e.at_paper_coords:
            raise NotComputed(f"not computed here: the model has no coordinate {c}")
        return e.at_paper_coords[str(c)]

    return get


# --- the numbers, one group of the paper at a time ------------------------------------------------

P = PaperNumber
SINK = "Sink (Table 1a)"
TABLE1 = "Interventions (Table 1)"
DELTA = "Source-agnostic shift Δ (Figs 1, 6)"
EPE = "EPE validation (Fig 3)"
MASSIVE = "Massive activations (Fig 7)"
ALIGN = "b_Q / key alignment (Fig 2)"
GAMMA = "γ (Figs 4, 8)"
FW, W = "circuit_forward", "circuit_weights"  # the stages of the circuit numbers

# Table 1's rows: (BOS attention, % of baseline) and what each intervention does
TABLE1_VALUES = {k: v for k, v in PAPER_TABLE1.items() if k != "a"}  # one owner: labels
TABLE1_NAMES = {
    "b": "b_Q := 0",
    "c": "index 0 gets p_1",
    "d": "swap EPE (sink moves to index 1)",
    "e": "swap raw positions (control)",
    "f": "index-0 token embedding := 0 (control)",
    "g": "skip every MLP",
    "h": "no positional embeddings",
    "i": "zero the massive coordinates' W_K rows",
    "j": "zero 3 random W_K rows (control)",
}


def _sink_rows() -> list[PaperNumber]:
    """Table 1a: the sink itself, its SE, per dataset and over all layers."""
    return [
        P(
            SINK,
            "BOS attention (layer band, all inputs)",
            0.563,
            _g("measure", "bos_attention", "all", "mean"),
            stage="measure",
        ),
        P(
            SINK,
            "2 SE of that mean",
            0.004,
            lambda r: 2 * _part(r, "measure", "bos_attention")["all"].se,
            stage="measure",
        ),
        P(SINK, "SST-2 baseline", 0.599, _dataset("sst2"), stage="measure"),
        P(SINK, "GSM8K baseline", 0.552, _dataset("gsm8k"), stage="measure"),
        P(SINK, "HumanEval baseline", 0.539, _dataset("humaneval"), stage="measure"),
        P(
            SINK,
            "all-layer baseline",
            0.44,
            _g("measure", "bos_attention_all_layers", "all", "mean"),
            digits=2,
            stage="measure",
        ),
    ]


def _table1_rows() -> list[PaperNumber]:
    """Table 1: BOS attention and % of baseline under each intervention (b)..(j)."""
    n = []
    for rid, (mean, pct) in TABLE1_VALUES.items():
        label = f"({rid}) {TABLE1_NAMES[rid]}"
        n.append(P(TABLE1, f"{label}: BOS attention", mean, _t1(rid), stage="interventions"))
        n.append(
            P(
                TABLE1,
                f"{label}: % of baseline",
                pct,
                _t1(rid, "pct"),
                digits=1 if pct != 100.0 else 0,
                stage="interventions",
            )
        )
    return n


def _table1_variant_rows() -> list[PaperNumber]:
    """Table 1's per-dataset (b) rows and the all-layer variants of (b), (c), (d)."""
    n = [
        P(
            TABLE1,
            f"(b) b_Q := 0 on {ds}: % of baseline",
            pct,
            _t1("b", "pct", ds),
            digits=1,
            stage="interventions",
        )
        for ds, pct in (("sst2", 45.4), ("gsm8k", 43.3), ("humaneval", 45.3))
    ]
    n += [
        P(
            TABLE1,
            f"({rid}) all-layer variant: % of baseline",
            pct,
            _t1(rid, "pct", scope="all"),
            digits=1,
            stage="interventions",
        )
        for rid, pct in (("b", 45.2), ("c", 3.6), ("d", 9.6))
    ]
    return n


def _loss_rows() -> list[PaperNumber]:
    """The loss cost of three interventions (reported outside Table 1)."""
    return [
        P(
            "Loss cost (reported elsewhere)",
            f"({rid}) {what}: Δ cross-entropy (nats)",
            nats,
            _t1(rid, "delta_ce"),
            digits=2 if rid != "b" else 1,
            stage="interventions",
        )
        for rid, nats, what in (
            ("d", 0.94, "swap EPE"),
            ("b", 1.6, "b_Q := 0"),
            ("i", 0.26, "zero the massive coordinates' W_K rows"),
        )
    ]


def _delta_rows() -> list[PaperNumber]:
    """Figs 1 and 6: the source-agnostic shift Δ at index 0 against the other positions."""
    return [
        P(DELTA, "layer 3: index-0 median", 50.50, _layer(3, "index0_median"), digits=2, stage=FW),
        P(
            DELTA,
            "layer 3: largest p90 of any other position",
            29.49,
            _layer(3, "max_other_p90"),
            digits=2,
            stage=FW,
        ),
        P(
            DELTA,
            "layers where index-0 p10 > every other p90",
            [8, 9, 10],
            _g(FW, "delta", "layers_index0_p10_above_all_other_p90"),
            stage=FW,
        ),
        P(
            DELTA,
            "mean Δ at index 0, layer band",
            30.4,
            _g(FW, "delta", "index0_mean"),
            digits=1,
            tol=0.05,
            stage=FW,
        ),
        P(
            DELTA,
            "mean Δ elsewhere, layer band",
            5.6,
            _g(FW, "delta", "other_mean"),
            digits=1,
            tol=0.05,
            stage=FW,
        ),
    ]


def _epe_rows() -> list[PaperNumber]:
    """Fig 3: how well the EPE predicts what position adds after the first MLP."""
    return [
        P(
            EPE,
            "median cos at index 0",
            0.9962,
            _g(FW, "epe", "validation_median_index0"),
            digits=4,
            stage=FW,
        ),
        P(
            EPE,
            "lowest median cos at another position",
            0.8218,
            _g(FW, "epe", "validation_min_median_other"),
            digits=4,
            stage=FW,
        ),
        P(
            EPE,
            "global median cos, all positions (index 0 included)",
            0.8473,
            _g(FW, "epe", "validation_global_median"),
            digits=4,
            stage=FW,
        ),
    ]


def _massive_rows() -> list[PaperNumber]:
    """Fig 7: the massive coordinates of EPE_0 and its values there."""
    n = [
        P(
            MASSIVE,
            "massive coordinates of EPE_0",
            PAPER_COORDS,
            _g(W, "epe", "massive_coords"),
            stage=W,
        )
    ]
    n += [
        P(MASSIVE, f"EPE_0[{c}]", v, _at_paper_coord(c), digits=0, tol=0.5, stage=W)
        for c, v in zip(PAPER_COORDS, (330.0, -218.0, 105.0))
    ]
    return n


def _alignment_rows() -> list[PaperNumber]:
    """Fig 2: cos(b_Q, W_K·EPE_j) at index 0 against the other positions."""
    return [
        P(
            ALIGN,
            "cos at index 0, p10..p90 over heads",
            "+0.45..+0.9",
            lambda r: "{:+.2f}..{:+.2f}".format(*_part(r, W, "alignment").index0_p10_p90),
            stage=W,
        ),
        P(
            ALIGN,
            "median cos at the other positions",
            -0.5,
            _g(W, "alignment", "other_median_cos"),
            digits=1,
            tol=0.1,
            stage=W,
        ),
    ]


def _gamma_rows() -> list[PaperNumber]:
    """Figs 4 and 8: |γ| on the massive coordinates against the other coordinates."""
    rows = []
    for g, what, (mean, median, count) in (
        (("gamma", "massive"), "the massive coordinates", (1.3695, 1.0923, 288)),
        (("gamma", "other"), "the other coordinates", (0.1757, 0.1237, 73440)),
    ):
        rows += [
            P(GAMMA, f"mean |γ| on {what}", mean, _g(W, *g, "mean"), digits=4, stage=W),
            P(GAMMA, f"median |γ| on {what}", median, _g(W, *g, "median"), digits=4, stage=W),
            P(GAMMA, f"values on {what}", count, _g(W, *g, "count"), digits=0, stage=W),
        ]
    return rows


PAPER_NUMBERS: list[PaperNumber] = [
    *_sink_rows(),
    *_table1_rows(),
    *_table1_variant_rows(),
    *_loss_rows(),
    *_delta_rows(),
    *_epe_rows(),
    *_massive_rows(),
    *_alignment_rows(),
    *_gamma_rows(),
]
