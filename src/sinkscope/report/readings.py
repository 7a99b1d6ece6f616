"""Plain-language readings: the facts step's and the interventions' (the other stages write
theirs beside their code or in :mod:`.sections`) and the helpers they share. A reading quotes
numbers as its table prints them (:func:`.tables.fmt`: never "-0") and claims only what the
numbers show (:func:`sink_fate`: the sink "moves" only where index 1 takes what index 0 lost).

Kept apart from the stages so that wording can change without invalidating cached results.

>>> from sinkscope.report.records import read_record
>>> facts_reading(read_record("facts", {"massive_coords": {"coords": [3], "rule": "σ rule"},
...     "creating_block": 1, "creating_block_rule": "norm ratio"}))
"The run's massive coordinates are [3], chosen by the σ rule; index 0 stands out in the residual stream after block 1. Every later stage, figure and table of this report uses these facts."
"""

from __future__ import annotations

from .records import Band, Cell, FactsRecord, InterventionsRecord
from .tables import _f


def all_layers_text(rec: Band) -> str:
    """The scope of an all-layer number: ``"all 6 layers (0..5)"`` (``"all layers"`` when the
    record's ``model_info`` does not give the layer count)."""
    n = rec.model_info.get("n_layers")
    return f"all {n} layers (0..{n - 1})" if isinstance(n, int) else "all layers"


def strength(m: float) -> str:
    return "a strong sink" if m >= 0.3 else ("a weak sink" if m >= 0.1 else "hardly a sink")


def facts_reading(f: FactsRecord) -> str:
    mc = f.massive_coords
    coords = (
        f"The run's massive coordinates are {mc.coords}, chosen by the {mc.rule}"
        if mc.coords
        else f"No massive coordinates are known ({mc.rule})"
    )
    if f.gamma_coords is not None and f.gamma_coords != mc:
        g = f.gamma_coords
        coords += (
            f"; γ's are {g.coords}, chosen by the {g.rule}"
            if g.coords
            else f"; γ has none ({g.rule})"
        )
    b = f.creating_block
    block = (
        f"index 0 stands out in the residual stream after block {b}"
        if b is not None
        else "index 0 never stands out in the residual stream"
        if "never" in f.creating_block_rule
        else "the creating block was not computed (no forward pass)"
    )
    return (
        f"{coords}; {block}. Every later stage, figure and table of this report uses these facts."
    )


NEUTRAL_POINTS = 5.0  # within this many points of 100% of the baseline, the sink is kept
MOVED_SHARE = 0.5  # the sink moves to index 1 when index 1 gains at least half of what index 0 lost


def sink_fate(c: Cell, base: Cell) -> str:
    """What an intervention did to the sink, decided from the numbers the table shows:
    ``"moved"`` (index 0 lost more than :data:`NEUTRAL_POINTS` and index 1 took at least
    :data:`MOVED_SHARE` of that and at least doubled), ``"reduced"`` (index 0 lost it and index 1
    did not take it), ``"raised"`` or ``"kept"`` (within :data:`NEUTRAL_POINTS` of 100%).

    >>> from sinkscope.report.records import Cell
    >>> base = Cell("baseline", True, mean=0.5, pct=100.0, attn_to_1=0.02)
    >>> sink_fate(Cell("f", True, mean=0.3, pct=60.0, attn_to_1=0.03), base)
    'reduced'
    >>> sink_fate(Cell("d", True, mean=0.1, pct=20.0, attn_to_1=0.35), base)
    'moved'
    """
    pct = round(c.pct, 1)
    if pct > 100 + NEUTRAL_POINTS:
        return "raised"
    if pct >= 100 - NEUTRAL_POINTS:
        return "kept"
    lost, gained = base.mean - c.mean, c.attn_to_1 - base.attn_to_1
    if gained >= MOVED_SHARE * lost and c.attn_to_1 >= 2 * base.attn_to_1:
        return "moved"
    return "reduced"


def _to_index1(c, base) -> str:
    return f"attention to index 1 {_f(c.attn_to_1)}, baseline {_f(base.attn_to_1)}"


def _fate_text(c, base) -> str:
    """An intervention's effect on the sink in words, with the table's numbers."""
    fate = sink_fate(c, base)
    if fate == "moved":
        return f"moves the sink to index 1 ({_f(c.pct, '.1f')}% left at index 0; {_to_index1(c, base)})"
    if fate == "reduced":
        return f"reduces the sink to {_f(c.pct, '.1f')}% without moving it to index 1 ({_to_index1(c, base)})"
    if fate == "raised":
        return f"raises the sink to {_f(c.pct, '.1f')}%"
    return f"keeps the sink ({_f(c.pct, '.1f')}%)"


def interventions_reading(iv: InterventionsRecord) -> str:
    """The Table 1 reading: the strongest intervention, (b), (d) and the controls; the sink is
    said to move only where attention to index 1 takes what index 0 lost (:func:`sink_fate`).
    Numbers at the table's precision."""
    parts = []
    base = iv.value("a")
    rows = {rid: iv.value(rid) for rid in "bcdefghij"}
    ok = {k: v for k, v in rows.items() if v}
    if base and ok:
        k = min(ok, key=lambda k: ok[k].pct)
        c = ok[k]
        if sink_fate(c, base) in ("kept", "raised"):
            parts.append(
                f"None of the ten interventions lowers the sink by more than {NEUTRAL_POINTS:g} points: the strongest, ({k}) {c.description}, "
                f"leaves {_f(c.pct, '.1f')}% of the baseline {_f(base.mean)} ({_f(c.delta_ce, '+.3f')} nats of cross-entropy)."
            )
        else:
            moved = sink_fate(c, base) == "moved"
            parts.append(
                f"Of the ten interventions, ({k}) {c.description} lowers the sink at index 0 the most: {_f(c.pct, '.1f')}% of the baseline {_f(base.mean)} is left, "
                f"at {_f(c.delta_ce, '+.3f')} nats of cross-entropy"
                + (f"; the attention goes to index 1 ({_to_index1(c, base)})." if moved else ".")
            )
        if ok.get("b"):
            parts.append(
                f"Zeroing the query bias (b) leaves {_f(ok['b'].pct, '.1f')}% ({_f(ok['b'].delta_ce, '+.3f')} nats)."
            )
        if ok.get("d"):
            d = ok["d"]
            fate = sink_fate(d, base)
            parts.append(
                f"Swapping the first two positions' EPE directions (d) leaves {_f(d.pct, '.1f')}% at index 0 while index 1 receives {_f(d.attn_to_1)} "
                f"(baseline {_f(base.attn_to_1)}): the sink "
                + {
                    "moved": "moves with the EPE.",
                    "reduced": "shrinks but does not move to index 1.",
                    "raised": "grows at index 0 and does not move.",
                    "kept": "stays at index 0.",
                }[fate]
            )
        ctrl = [k for k in "efj" if ok.get(k)]
        near = [k for k in ctrl if sink_fate(ok[k], base) == "kept"]
        far = [k for k in ctrl if k not in near]
        if near:
            parts.append(
                ("Controls " if len(near) > 1 else "Control ")
                + ", ".join(f"({k}) {_f(ok[k].pct, '.1f')}%" for k in near)
                + (" stay" if len(near) > 1 else " stays")
                + f" within {NEUTRAL_POINTS:g} points of 100%, as a control should."
            )
        if far:
            parts.append(
                "But "
                + ", ".join(f"({k}) {ok[k].description} {_fate_text(ok[k], base)}" for k in far)
                + (
                    ": on this model those controls are not neutral."
                    if len(far) > 1
                    else ": on this model that control is not neutral."
                )
            )
    na = [k for k, v in rows.items() if v is None]
    if na:
        parts.append(
            f"Not applicable here: {', '.join('(' + k + ')' for k in na)} (the table gives the reason)."
        )
    return " ".join(parts)
