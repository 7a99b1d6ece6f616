"""Every number of the study (``shared/docs/paper-notes.md``) and where ``sinkscope reproduce``
finds its counterpart, for the report's *paper vs this run* table.

Each row carries the paper's setting and this run's, so like is compared with like. A row is
*matches* / *differs* only where the two settings agree (GPT-2 small; for forward-pass numbers also
the paper's 300 inputs of 40 tokens); elsewhere it is a *reference* row. A number matches when
this run's value lies within half a unit of the paper's last printed digit (``.563`` → ±0.0005;
values the paper gives as "≈" get the stated ``tol``); sets must be equal. Layers are 0-based
here (the paper's "layer 4" is our layer 3).

>>> from sinkscope.report.records import read_record
>>> r = {"measure": read_record("measure", {"layer_band": [3, 11], "bos_attention": {"all": {"mean": 0.5634}}})}
>>> row = compare_one(PAPER_NUMBERS[0], r)
>>> row["paper"], row["this run"], row["status"]
('0.563', '0.5634', 'matches')
>>> compare_one(PAPER_NUMBERS[0], r, comparable=False)["status"]
'reference'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

# the massive coordinates of GPT-2 small's EPE_0 (paper Fig 7); the γ split uses them when the
# EPE cannot be computed (a partial checkpoint without the layer-0 MLP)
PAPER_COORDS = [138, 378, 447]
PAPER_BAND = [3, 11]  # the paper's layers 4..11, 0-based, stop exclusive
GPT2_SMALL = {
    "model_type": "gpt2",
    "n_layer": 12,
    "n_embd": 768,
    "n_head": 12,
    "vocab_size": 50257,
    "n_positions": 1024,
}


def is_gpt2_small(config) -> bool:
    """True for the GPT-2 small architecture (the model the paper measured)."""
    return all(getattr(config, k, None) == v for k, v in GPT2_SMALL.items())


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


def _numbers() -> list[PaperNumber]:
    P = PaperNumber
    n = [
        P(
            "Sink (Table 1a)",
            "BOS attention (layer band, all inputs)",
            0.563,
            _g("measure", "bos_attention", "all", "mean"),
            stage="measure",
        ),
        P(
            "Sink (Table 1a)",
            "2 SE of that mean",
            0.004,
            lambda r: 2 * _part(r, "measure", "bos_attention")["all"].se,
            stage="measure",
        ),
        P("Sink (Table 1a)", "SST-2 baseline", 0.599, _dataset("sst2"), stage="measure"),
        P("Sink (Table 1a)", "GSM8K baseline", 0.552, _dataset("gsm8k"), stage="measure"),
        P("Sink (Table 1a)", "HumanEval baseline", 0.539, _dataset("humaneval"), stage="measure"),
        P(
            "Sink (Table 1a)",
            "all-layer baseline",
            0.44,
            _g("measure", "bos_attention_all_layers", "all", "mean"),
            digits=2,
            stage="measure",
        ),
    ]
    table1 = {
        "b": (0.251, 44.7),
        "c": (0.017, 3.0),
        "d": (0.035, 6.2),
        "e": (0.557, 99.0),
        "f": (0.561, 99.7),
        "g": (0.283, 50.3),
        "h": (0.099, 17.5),
        "i": (0.367, 65.2),
        "j": (0.563, 100.0),
    }
    names = {
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
    for rid, (mean, pct) in table1.items():
        n.append(
            P(
                "Interventions (Table 1)",
                f"({rid}) {names[rid]}: BOS attention",
                mean,
                _t1(rid),
                stage="interventions",
            )
        )
        n.append(
            P(
                "Interventions (Table 1)",
                f"({rid}) {names[rid]}: % of baseline",
                pct,
                _t1(rid, "pct"),
                digits=1 if pct != 100.0 else 0,
                stage="interventions",
            )
        )
    for ds, pct in (("sst2", 45.4), ("gsm8k", 43.3), ("humaneval", 45.3)):
        n.append(
            P(
                "Interventions (Table 1)",
                f"(b) b_Q := 0 on {ds}: % of baseline",
                pct,
                _t1("b", "pct", ds),
                digits=1,
                stage="interventions",
            )
        )
    for rid, pct in (("b", 45.2), ("c", 3.6), ("d", 9.6)):
        n.append(
            P(
                "Interventions (Table 1)",
                f"({rid}) all-layer variant: % of baseline",
                pct,
                _t1(rid, "pct", scope="all"),
                digits=1,
                stage="interventions",
            )
        )
    for rid, nats, what in (
        ("d", 0.94, "swap EPE"),
        ("b", 1.6, "b_Q := 0"),
        ("i", 0.26, "zero the massive coordinates' W_K rows"),
    ):
        n.append(
            P(
                "Loss cost (reported elsewhere)",
                f"({rid}) {what}: Δ cross-entropy (nats)",
                nats,
                _t1(rid, "delta_ce"),
                digits=2 if rid != "b" else 1,
                stage="interventions",
            )
        )
    n += [
        P(
            "Source-agnostic shift Δ (Figs 1, 6)",
            "layer 3: index-0 median",
            50.50,
            _layer(3, "index0_median"),
            digits=2,
            stage="circuit_forward",
        ),
        P(
            "Source-agnostic shift Δ (Figs 1, 6)",
            "layer 3: largest p90 of any other position",
            29.49,
            _layer(3, "max_other_p90"),
            digits=2,
            stage="circuit_forward",
        ),
        P(
            "Source-agnostic shift Δ (Figs 1, 6)",
            "layers where index-0 p10 > every other p90",
            [8, 9, 10],
            _g("circuit_forward", "delta", "layers_index0_p10_above_all_other_p90"),
            stage="circuit_forward",
        ),
        P(
            "Source-agnostic shift Δ (Figs 1, 6)",
            "mean Δ at index 0, layer band",
            30.4,
            _g("circuit_forward", "delta", "index0_mean"),
            digits=1,
            tol=0.05,
            stage="circuit_forward",
        ),
        P(
            "Source-agnostic shift Δ (Figs 1, 6)",
            "mean Δ elsewhere, layer band",
            5.6,
            _g("circuit_forward", "delta", "other_mean"),
            digits=1,
            tol=0.05,
            stage="circuit_forward",
        ),
        P(
            "EPE validation (Fig 3)",
            "median cos at index 0",
            0.9962,
            _g("circuit_forward", "epe", "validation_median_index0"),
            digits=4,
            stage="circuit_forward",
        ),
        P(
            "EPE validation (Fig 3)",
            "lowest median cos at another position",
            0.8218,
            _g("circuit_forward", "epe", "validation_min_median_other"),
            digits=4,
            stage="circuit_forward",
        ),
        P(
            "EPE validation (Fig 3)",
            "global median cos, all positions (index 0 included)",
            0.8473,
            _g("circuit_forward", "epe", "validation_global_median"),
            digits=4,
            stage="circuit_forward",
        ),
        P(
            "Massive activations (Fig 7)",
            "massive coordinates of EPE_0",
            PAPER_COORDS,
            _g("circuit_weights", "epe", "massive_coords"),
            stage="circuit_weights",
        ),
    ]
    for c, v in zip(PAPER_COORDS, (330.0, -218.0, 105.0)):
        n.append(
            P(
                "Massive activations (Fig 7)",
                f"EPE_0[{c}]",
                v,
                _at_paper_coord(c),
                digits=0,
                tol=0.5,
                stage="circuit_weights",
            )
        )
    n += [
        P(
            "b_Q / key alignment (Fig 2)",
            "cos at index 0, p10..p90 over heads",
            "+0.45..+0.9",
            lambda r: "{:+.2f}..{:+.2f}".format(
                *_part(r, "circuit_weights", "alignment").index0_p10_p90
            ),
            stage="circuit_weights",
        ),
        P(
            "b_Q / key alignment (Fig 2)",
            "median cos at the other positions",
            -0.5,
            _g("circuit_weights", "alignment", "other_median_cos"),
            digits=1,
            tol=0.1,
            stage="circuit_weights",
        ),
        P(
            "γ (Figs 4, 8)",
            "mean |γ| on the massive coordinates",
            1.3695,
            _g("circuit_weights", "gamma", "massive", "mean"),
            digits=4,
            stage="circuit_weights",
        ),
        P(
            "γ (Figs 4, 8)",
            "median |γ| on the massive coordinates",
            1.0923,
            _g("circuit_weights", "gamma", "massive", "median"),
            digits=4,
            stage="circuit_weights",
        ),
        P(
            "γ (Figs 4, 8)",
            "values on the massive coordinates",
            288,
            _g("circuit_weights", "gamma", "massive", "count"),
            digits=0,
            stage="circuit_weights",
        ),
        P(
            "γ (Figs 4, 8)",
            "mean |γ| on the other coordinates",
            0.1757,
            _g("circuit_weights", "gamma", "other", "mean"),
            digits=4,
            stage="circuit_weights",
        ),
        P(
            "γ (Figs 4, 8)",
            "median |γ| on the other coordinates",
            0.1237,
            _g("circuit_weights", "gamma", "other", "median"),
            digits=4,
            stage="circuit_weights",
        ),
        P(
            "γ (Figs 4, 8)",
            "values on the other coordinates",
            73440,
            _g("circuit_weights", "gamma", "other", "count"),
            digits=0,
            stage="circuit_weights",
        ),
    ]
    return n


PAPER_NUMBERS: list[PaperNumber] = _numbers()


def _fmt(x, digits: int) -> str:
    if isinstance(x, (list, tuple)):
        return "{" + ", ".join(str(int(v)) for v in x) + "}"
    if isinstance(x, str):
        return x
    return f"{x:,.{digits}f}" if digits == 0 else f"{x:.{digits}f}"


def compare_one(
    num: PaperNumber, results: dict, *, comparable: bool = True, setting: str = ""
) -> dict:
    """One row: the paper's value and setting, this run's value and setting, the difference, and
    the status: ``matches`` / ``differs`` where ``comparable``, else ``reference``; ``not run``
    (its stage was skipped) or ``not computed`` / ``not applicable`` (with the reason)."""
    row = {
        "group": num.group,
        "quantity": num.label,
        "paper": _fmt(num.paper, num.digits),
        "paper setting": num.setting,
        "this run": "",
        "this run's setting": setting,
        "difference": "",
        "status": "not run",
        "stage": num.stage,
    }
    if num.stage not in results:
        row["status"] = f"not run ({num.stage} stage skipped)"
        return row
    try:
        v = num.get(results)
    except NotComputed as e:
        row["status"] = str(e)
        return row
    if v is None or (isinstance(v, float) and math.isnan(v)):
        row["status"] = "not computed here (no value)"
        return row

    def status(same: bool) -> str:
        return ("matches" if same else "differs") if comparable else "reference"

    if isinstance(num.paper, (list, tuple)):
        got = sorted(int(x) for x in v)
        row["this run"] = _fmt(got, 0)
        row["status"] = status(got == sorted(num.paper))
        return row
    if isinstance(num.paper, str):
        row["this run"], row["status"] = str(v), "compare by eye" if comparable else "reference"
        return row
    v = float(v)
    tol = num.tol if num.tol is not None else 0.5 * 10 ** (-num.digits)
    diff = v - float(num.paper)
    shown = (
        num.digits + 1 if num.digits else 0
    )  # one digit more than the paper prints, so rounding shows; counts as integers
    row["this run"] = f"{v:,.{shown}f}"
    if comparable:
        row["difference"] = f"{diff + 0.0:+,.{shown}f}"
    row["status"] = status(abs(diff) <= tol + 1e-12)
    return row


def run_settings(records: dict, model_name: str = "this model") -> dict[str, str]:
    """This run's setting per stage (``records``: stage name -> typed record), in the words of
    :attr:`PaperNumber.setting`."""
    out = {}
    m = records.get("measure") or records.get("interventions")
    if m:
        T = getattr(m, "seq_len", None)
        forward = f"{model_name}, layers {m.band_text}, {m.n_examples} inputs" + (
            f" × {T} tokens" if T else ""
        )
        out |= {"measure": forward, "circuit_forward": forward, "interventions": forward}
    iv = records.get("interventions")
    if iv:
        out["interventions (i)"] = (
            out["interventions"] + f", W_K rows {', '.join(map(str, iv.coords or [])) or 'none'}"
        )
    w = records.get("circuit_weights")
    if w:
        coords = w.gamma.coords if w.gamma else None
        out["circuit_weights"] = f"{model_name} weights"
        out["circuit_weights γ"] = out["circuit_weights"] + (
            f", W_K rows {', '.join(map(str, coords))} ({w.coords_source})" if coords else ""
        )
    return out


def _same_setting(n: PaperNumber, records: dict, paper_inputs: bool) -> bool:
    """Whether this run measured ``n`` in the paper's setting (inputs, band, coordinates)."""
    rec = records.get(n.stage)
    if rec is None:
        return False
    if n.stage == "circuit_weights":
        return "γ" not in n.group or (
            rec.gamma is not None and sorted(rec.gamma.coords) == PAPER_COORDS
        )
    if not paper_inputs or list(rec.layer_band) != PAPER_BAND:
        return False
    return not n.label.startswith("(i)") or sorted(rec.coords or []) == PAPER_COORDS


def paper_vs_run(
    results: dict,
    *,
    gpt2_small: bool = True,
    paper_inputs: bool = True,
    model_name: str = "this model",
) -> pd.DataFrame:
    """The whole table: one row per number of the paper (``results``: stage name -> typed
    record, :func:`~sinkscope.report.records.read_record`).
    Rows are *matches* / *differs* only where this run's setting is the paper's: GPT-2 small
    (``gpt2_small``); forward-pass rows on the paper's inputs (``paper_inputs``) and layer band
    3..10; (i) and γ rows on the paper's coordinates 138, 378, 447. The rest are *reference* rows."""
    st = run_settings(results, model_name)
    rows = []
    for n in PAPER_NUMBERS:
        comparable = gpt2_small and _same_setting(n, results, paper_inputs)
        key = (
            n.stage
            + (" (i)" if n.label.startswith("(i)") else "")
            + (" γ" if "γ" in n.group else "")
        )
        rows.append(
            compare_one(n, results, comparable=comparable, setting=st.get(key, st.get(n.stage, "")))
        )
    return pd.DataFrame(rows)
