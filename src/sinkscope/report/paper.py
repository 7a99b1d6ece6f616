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
from typing import TYPE_CHECKING

import pandas as pd

from .paper_numbers import (  # noqa: F401  (the table lives there; its names stay importable here)
    PAPER_COORDS,
    PAPER_NUMBERS,
    NotComputed,
    PaperNumber,
    _at_paper_coord,
    _dataset,
    _g,
    _layer,
    _part,
    _t1,
)

if TYPE_CHECKING:
    pass

__all__ = [
    "GPT2_SMALL",
    "PAPER_BAND",
    "PAPER_COORDS",
    "PAPER_NUMBERS",
    "NotComputed",
    "PaperNumber",
    "compare_one",
    "is_gpt2_small",
    "paper_vs_run",
    "run_settings",
]

PAPER_BAND = [3, 11]  # the paper's layers 4..11, 0-based, stop exclusive
from ..models.precheck import GPT2_SMALL, is_gpt2_small  # noqa: E402,F401  (architecture: models/)


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
    from .readings import all_layers_text

    out = {}
    m = records.get("measure") or records.get("interventions")
    if m:
        T = getattr(m, "seq_len", None)
        tail = f", {m.n_examples} inputs" + (f" × {T} tokens" if T else "")
        forward = f"{model_name}, layers {m.band_text}{tail}"
        out |= {"measure": forward, "circuit_forward": forward, "interventions": forward}
        for stage in ("measure", "interventions"):  # the all-layer rows: every layer, not the band
            rec = records.get(stage) or m
            out[f"{stage} all-layer"] = f"{model_name}, {all_layers_text(rec)}{tail}"
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
            + (" all-layer" if "all-layer" in n.label else "")
        )
        rows.append(
            compare_one(n, results, comparable=comparable, setting=st.get(key, st.get(n.stage, "")))
        )
    return pd.DataFrame(rows)
