"""The ``--edit NAME=SPEC`` mini-language: parts joined by ``+``, each ``kind[:args][@START:STOP]``.

=================  ==========================================================
``baseline``       no change
``bq:S``           b_Q := S·b_Q (``bq:0`` removes it)
``zero_wk[:c,..]`` zero W_K input rows (default: the massive coordinates)
``random_wk:N[:SEED]``  zero N random non-massive W_K rows per layer
``pos:K``          index 0 gets p_K
``no_pos``         no positional embeddings
``zero_tok0``      token embedding at index 0 := 0
``skip_mlp``       the MLP adds nothing
``swap_epe`` / ``swap_pe``  move the EPE / raw-PE component of index 0 to index 1 after MLP 0
=================  ==========================================================

``@START:STOP`` restricts ``bq``, ``zero_wk``, ``random_wk`` and ``skip_mlp`` to those layers.

>>> name, iv = parse_edit("half_bq=bq:0.5@3:11")
>>> name, iv.describe()
('half_bq', 'b_Q := 0.5·b_Q (layers 3..10)')
>>> parse_edit("bq:0+skip_mlp@0:2")[1].describe()
'b_Q := 0·b_Q (all layers) + skip MLP (layers 0..1)'
"""
from __future__ import annotations

from ..errors import SinkscopeError
from .base import Compose, Identity, Intervention
from .edits import (
    DropPositionEmbeddings,
    RandomKeyCoords,
    ReplacePositionEmbedding,
    ScaleQueryBias,
    SkipMLP,
    SwapDirection,
    ZeroKeyCoords,
    ZeroTokenEmbedding,
)

KINDS = ("baseline", "bq", "zero_wk", "random_wk", "pos", "no_pos", "zero_tok0", "skip_mlp", "swap_epe", "swap_pe")


def _part(text: str) -> Intervention:
    import math

    body, _, span = text.partition("@")
    kind, _, arg = body.partition(":")
    layers = None

    def count(x: str, what: str) -> int:
        n = int(x)
        if n < 0:
            raise SinkscopeError(f"--edit part '{text}': {what} {n} is negative; use 0 or more")
        return n

    try:
        if span:
            a, b = (int(x) for x in span.split(":"))
            if not 0 <= a < b:
                raise SinkscopeError(f"--edit part '{text}': @{a}:{b} is not a layer range START:STOP with 0 <= START < STOP")
            layers = range(a, b)
        if kind == "baseline":
            return Identity()
        if kind == "bq":
            scale = float(arg or 0.0)
            if not math.isfinite(scale):
                raise SinkscopeError(f"--edit part '{text}': the scale {arg} is not a finite number; e.g. bq:0.5")
            return ScaleQueryBias(scale, layers=layers)
        if kind == "zero_wk":
            return ZeroKeyCoords([count(c, "coordinate") for c in arg.split(",")] if arg else None, layers=layers)
        if kind == "random_wk":
            n, _, seed = arg.partition(":")
            return RandomKeyCoords(count(n or "3", "row count"), seed=int(seed or 0), layers=layers)
        if kind == "pos":
            return ReplacePositionEmbedding(0, count(arg or "1", "position"))
        if kind == "no_pos":
            return DropPositionEmbeddings()
        if kind == "zero_tok0":
            return ZeroTokenEmbedding(0)
        if kind == "skip_mlp":
            return SkipMLP(layers=layers)
        if kind in ("swap_epe", "swap_pe"):
            return SwapDirection(kind.split("_")[1], layer=0)
    except ValueError:
        raise SinkscopeError(f"--edit part '{text}' has a malformed number; e.g. bq:0.5@3:11") from None
    raise SinkscopeError(f"--edit part '{text}' is unknown; kinds: {', '.join(KINDS)}")


def parse_edit(item: str) -> tuple[str, Intervention]:
    """``NAME=SPEC`` (or just ``SPEC``, which is then also the name) -> ``(name, intervention)``."""
    name, eq, spec = item.partition("=")
    if not eq:
        name, spec = item, item
    parts = [p.strip() for p in spec.split("+") if p.strip()]
    if not name.strip() or not parts:
        raise SinkscopeError(f"--edit '{item}' is empty; write NAME=SPEC, e.g. half_bq=bq:0.5@3:11")
    ivs = [_part(p) for p in parts]
    return name.strip(), ivs[0] if len(ivs) == 1 else Compose(*ivs)
