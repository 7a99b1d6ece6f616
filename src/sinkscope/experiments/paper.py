"""Every number of the study (``shared/docs/paper-notes.md``) and where ``sinkscope reproduce``
finds its counterpart, for the report's *paper vs this run* table.

A number *matches* when this run's value lies within half a unit of the paper's last printed
digit (``.563`` → ±0.0005; values the paper gives as "≈" get the stated ``tol``); sets must be
equal. Layers are 0-based here (the paper's "layer 4" is our layer 3).

>>> row = compare_one(PAPER_NUMBERS[0], {"measure": {"bos_attention": {"all": {"mean": 0.5634}}}})
>>> row["paper"], row["this run"], row["status"]
('0.563', '0.5634', 'matches')
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

# the massive coordinates of GPT-2 small's EPE_0 (paper Fig 7); the γ split uses them when the
# EPE cannot be computed (a partial checkpoint without the layer-0 MLP)
PAPER_COORDS = [138, 378, 447]
GPT2_SMALL = {"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024}


def is_gpt2_small(config) -> bool:
    """True for the GPT-2 small architecture (the model the paper measured)."""
    return all(getattr(config, k, None) == v for k, v in GPT2_SMALL.items())


@dataclass(frozen=True)
class PaperNumber:
    group: str
    label: str
    paper: Any  # float, or a list for sets
    get: Callable[[dict], Any]  # stage summaries -> this run's value (KeyError/None: not run)
    digits: int = 3  # decimals the paper prints
    tol: float | None = None  # explicit tolerance for "≈" values
    stage: str = ""


def _g(*path):
    def get(r):
        x = r
        for p in path:
            x = x[p]
        return x

    return get


def _t1(rid, field="mean", dataset="all", scope="mid"):
    return _g("interventions", "table1", scope, dataset, rid, field)


def _layer(layer, field):
    def get(r):
        rows = [x for x in r["circuit_forward"]["delta"]["per_layer"] if x["layer"] == layer]
        return rows[0][field] if rows else None

    return get


def _numbers() -> list[PaperNumber]:
    P = PaperNumber
    n = [
        P("Sink (Table 1a)", "BOS attention, layers 3..10, 300 inputs", 0.563, _g("measure", "bos_attention", "all", "mean"), stage="measure"),
        P("Sink (Table 1a)", "2 SE of that mean", 0.004, lambda r: 2 * r["measure"]["bos_attention"]["all"]["se"], stage="measure"),
        P("Sink (Table 1a)", "SST-2 baseline", 0.599, _g("measure", "bos_attention", "sst2", "mean"), stage="measure"),
        P("Sink (Table 1a)", "GSM8K baseline", 0.552, _g("measure", "bos_attention", "gsm8k", "mean"), stage="measure"),
        P("Sink (Table 1a)", "HumanEval baseline", 0.539, _g("measure", "bos_attention", "humaneval", "mean"), stage="measure"),
        P("Sink (Table 1a)", "all-layer baseline", 0.44, _g("measure", "bos_attention_all_layers", "all", "mean"), digits=2, stage="measure"),
    ]
    table1 = {"b": (0.251, 44.7), "c": (0.017, 3.0), "d": (0.035, 6.2), "e": (0.557, 99.0), "f": (0.561, 99.7),
              "g": (0.283, 50.3), "h": (0.099, 17.5), "i": (0.367, 65.2), "j": (0.563, 100.0)}
    names = {"b": "b_Q := 0", "c": "index 0 gets p_1", "d": "swap EPE (sink moves to index 1)", "e": "swap raw positions (control)",
             "f": "index-0 token embedding := 0 (control)", "g": "skip every MLP", "h": "no positional embeddings",
             "i": "zero W_K rows 138, 378, 447", "j": "zero 3 random W_K rows (control)"}
    for rid, (mean, pct) in table1.items():
        n.append(P("Interventions (Table 1)", f"({rid}) {names[rid]}: BOS attention", mean, _t1(rid), stage="interventions"))
        n.append(P("Interventions (Table 1)", f"({rid}) {names[rid]}: % of baseline", pct, _t1(rid, "pct"), digits=1 if pct != 100.0 else 0, stage="interventions"))
    for ds, pct in (("sst2", 45.4), ("gsm8k", 43.3), ("humaneval", 45.3)):
        n.append(P("Interventions (Table 1)", f"(b) b_Q := 0 on {ds}: % of baseline", pct, _t1("b", "pct", ds), digits=1, stage="interventions"))
    for rid, pct in (("b", 45.2), ("c", 3.6), ("d", 9.6)):
        n.append(P("Interventions (Table 1)", f"({rid}) all-layer variant: % of baseline", pct, _t1(rid, "pct", scope="all"), digits=1, stage="interventions"))
    for rid, nats, what in (("d", 0.94, "swap EPE"), ("b", 1.6, "b_Q := 0"), ("i", 0.26, "zero W_K rows 138, 378, 447")):
        n.append(P("Loss cost (reported elsewhere)", f"({rid}) {what}: Δ cross-entropy (nats)", nats, _t1(rid, "delta_ce"), digits=2 if rid != "b" else 1, stage="interventions"))
    n += [
        P("Source-agnostic shift Δ (Figs 1, 6)", "layer 3: index-0 median", 50.50, _layer(3, "index0_median"), digits=2, stage="circuit_forward"),
        P("Source-agnostic shift Δ (Figs 1, 6)", "layer 3: largest p90 of any other position", 29.49, _layer(3, "max_other_p90"), digits=2, stage="circuit_forward"),
        P("Source-agnostic shift Δ (Figs 1, 6)", "layers where index-0 p10 > every other p90", [8, 9, 10], _g("circuit_forward", "delta", "layers_index0_p10_above_all_other_p90"), stage="circuit_forward"),
        P("Source-agnostic shift Δ (Figs 1, 6)", "mean Δ at index 0, layers 3..10", 30.4, _g("circuit_forward", "delta", "index0_mean"), digits=1, tol=0.05, stage="circuit_forward"),
        P("Source-agnostic shift Δ (Figs 1, 6)", "mean Δ elsewhere, layers 3..10", 5.6, _g("circuit_forward", "delta", "other_mean"), digits=1, tol=0.05, stage="circuit_forward"),
        P("EPE validation (Fig 3)", "median cos at index 0", 0.9962, _g("circuit_forward", "epe", "validation_median_index0"), digits=4, stage="circuit_forward"),
        P("EPE validation (Fig 3)", "lowest median cos at another position", 0.8218, _g("circuit_forward", "epe", "validation_min_median_other"), digits=4, stage="circuit_forward"),
        P("EPE validation (Fig 3)", "global median cos, all positions (index 0 included)", 0.8473, _g("circuit_forward", "epe", "validation_global_median"),
          digits=4, stage="circuit_forward"),
        P("Massive activations (Fig 7)", "massive coordinates of EPE_0", PAPER_COORDS, _g("circuit_weights", "epe", "massive_coords"), stage="circuit_weights"),
    ]
    for c, v in zip(PAPER_COORDS, (330.0, -218.0, 105.0)):
        n.append(P("Massive activations (Fig 7)", f"EPE_0[{c}]", v, _g("circuit_weights", "epe", "at_paper_coords", str(c)), digits=0, tol=0.5, stage="circuit_weights"))
    n += [
        P("b_Q / key alignment (Fig 2)", "cos at index 0, p10..p90 over heads", "+0.45..+0.9", lambda r: "{:+.2f}..{:+.2f}".format(*r["circuit_weights"]["alignment"]["index0_p10_p90"]), stage="circuit_weights"),
        P("b_Q / key alignment (Fig 2)", "median cos at the other positions", -0.5, _g("circuit_weights", "alignment", "other_median_cos"), digits=1, tol=0.1, stage="circuit_weights"),
        P("γ (Figs 4, 8)", "mean |γ| on the massive coordinates", 1.3695, _g("circuit_weights", "gamma", "massive", "mean"), digits=4, stage="circuit_weights"),
        P("γ (Figs 4, 8)", "median |γ| on the massive coordinates", 1.0923, _g("circuit_weights", "gamma", "massive", "median"), digits=4, stage="circuit_weights"),
        P("γ (Figs 4, 8)", "values on the massive coordinates", 288, _g("circuit_weights", "gamma", "massive", "count"), digits=0, stage="circuit_weights"),
        P("γ (Figs 4, 8)", "mean |γ| on the other coordinates", 0.1757, _g("circuit_weights", "gamma", "other", "mean"), digits=4, stage="circuit_weights"),
        P("γ (Figs 4, 8)", "median |γ| on the other coordinates", 0.1237, _g("circuit_weights", "gamma", "other", "median"), digits=4, stage="circuit_weights"),
        P("γ (Figs 4, 8)", "values on the other coordinates", 73440, _g("circuit_weights", "gamma", "other", "count"), digits=0, stage="circuit_weights"),
    ]
    return n


PAPER_NUMBERS: list[PaperNumber] = _numbers()


def _fmt(x, digits: int) -> str:
    if isinstance(x, (list, tuple)):
        return "{" + ", ".join(str(int(v)) for v in x) + "}"
    if isinstance(x, str):
        return x
    return f"{x:,.{digits}f}" if digits == 0 else f"{x:.{digits}f}"


def compare_one(num: PaperNumber, results: dict) -> dict:
    """One row of the table: paper, this run, difference, status (``matches``/``differs``/``not run``)."""
    row = {"group": num.group, "quantity": num.label, "paper": _fmt(num.paper, num.digits), "this run": "", "difference": "", "status": "not run", "stage": num.stage}
    if num.stage not in results:
        row["status"] = f"not run ({num.stage} stage skipped)"
        return row
    try:
        v = num.get(results)
    except (KeyError, IndexError, TypeError):
        v = None
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return row
    if isinstance(num.paper, (list, tuple)):
        got = sorted(int(x) for x in v)
        row["this run"] = _fmt(got, 0)
        row["status"] = "matches" if got == sorted(num.paper) else "differs"
        return row
    if isinstance(num.paper, str):
        row["this run"], row["status"] = str(v), "compare by eye"
        return row
    v = float(v)
    tol = num.tol if num.tol is not None else 0.5 * 10 ** (-num.digits)
    diff = v - float(num.paper)
    shown = num.digits + 1 if num.digits else 0  # one digit more than the paper prints, so rounding shows; counts as integers
    row["this run"] = f"{v:,.{shown}f}"
    row["difference"] = f"{diff + 0.0:+,.{shown}f}"
    row["status"] = "matches" if abs(diff) <= tol + 1e-12 else "differs"
    return row


def paper_vs_run(results: dict) -> pd.DataFrame:
    """The whole table: one row per number of the paper (``results``: stage name -> summary)."""
    return pd.DataFrame([compare_one(n, results) for n in PAPER_NUMBERS])
