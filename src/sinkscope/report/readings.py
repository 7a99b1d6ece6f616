"""Plain-language readings: the facts step's (each stage writes its own, beside its code) and
the helpers they share.

Kept apart from the stages so that wording can change without invalidating cached results.

>>> from sinkscope.report.records import read_record
>>> facts_reading(read_record("facts", {"massive_coords": {"coords": [3], "rule": "σ rule"},
...     "creating_block": 1, "creating_block_rule": "norm ratio"}))
"The run's massive coordinates are [3], chosen by the σ rule; index 0 stands out in the residual stream after block 1. Every later stage, figure and table of this report uses these facts."
"""

from __future__ import annotations

from .records import FactsRecord


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
