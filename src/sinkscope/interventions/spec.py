"""The ``--edit NAME=SPEC`` mini-language: parts joined by ``+``, each ``kind[:args][@START:STOP]``.

=================  ==========================================================
``baseline``       no change
``bq:S``           b_Q := S·b_Q (``bq:0`` removes it)
``zero_wk[:c,..]`` zero W_K input rows (default: the massive coordinates)
``random_wk:N[:SEED[:DRAW]]``  zero N random W_K rows per layer; DRAW ``sinkscope`` (default):
                   distinct, non-massive; ``paper``: the paper's draw (``randint`` N times per
                   layer, repeats and massive rows allowed; the seed reset before each example)
``pos:K``          index 0 gets p_K
``no_pos``         no positional embeddings
``zero_tok0``      token embedding at index 0 := 0
``skip_mlp``       the MLP adds nothing
``swap_epe`` / ``swap_pe``  move the EPE / raw-PE component of index 0 to index 1 after MLP 0
``qbar:S``         q̄ := S·q̄, the effective query bias (any architecture)
``wk:S``           W_K input rows of the massive coordinates × S
``patch0:S``       keep S of index 0's special part after the creating block (0: patched away)
=================  ==========================================================

``@START:STOP`` restricts ``bq``, ``qbar``, ``zero_wk``, ``wk``, ``random_wk`` and ``skip_mlp`` to
those layers. This language is the one registry of edits: the paper's presets (a)..(j),
``compare``'s edits and ``mitigate``'s sweeps are written in it (:data:`SCALABLE` names the edits a
strength sweeps).

>>> name, iv = parse_edit("half_bq=bq:0.5@3:11")
>>> name, iv.describe()
('half_bq', 'b_Q := 0.5·b_Q (layers 3..10)')
>>> parse_edit("bq:0+skip_mlp@0:2")[1].describe()
'b_Q := 0·b_Q (all layers) + skip MLP (layers 0..1)'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import SinkscopeError
from .labels import KINDS, RANDOM_DRAWS, SCALABLE  # noqa: F401  (one owner: labels.py)

if TYPE_CHECKING:
    from .base import Intervention

# the grammar is checked without torch (``check_edit``: every --edit answers before torch loads);
# the edits themselves are built from the parsed parts (``parse_edit``)


def _parse(text: str) -> tuple[str, tuple, dict]:
    """One part ``kind[:args][@START:STOP]`` -> ``(edit class, args, keywords)``, checked."""
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
                raise SinkscopeError(
                    f"--edit part '{text}': @{a}:{b} is not a layer range START:STOP with 0 <= START < STOP"
                )
            layers = range(a, b)
        if kind == "baseline":
            return "Identity", (), {}
        if kind == "bq":
            scale = float(arg or 0.0)
            if not math.isfinite(scale):
                raise SinkscopeError(
                    f"--edit part '{text}': the scale {arg} is not a finite number; e.g. bq:0.5"
                )
            return "ScaleQueryBias", (scale,), {"layers": layers}
        if kind == "zero_wk":
            coords = [count(c, "coordinate") for c in arg.split(",")] if arg else None
            return "ZeroKeyCoords", (coords,), {"layers": layers}
        if kind == "random_wk":
            n, _, rest = arg.partition(":")
            seed, _, draw = rest.partition(":")
            if draw and draw not in RANDOM_DRAWS:
                raise SinkscopeError(
                    f"--edit part '{text}': the draw '{draw}' is unknown; use {' or '.join(RANDOM_DRAWS)}"
                )
            kw = {"seed": int(seed or 0), "layers": layers, "draw": draw or "sinkscope"}
            return "RandomKeyCoords", (count(n or "3", "row count"),), kw
        if kind == "pos":
            return "ReplacePositionEmbedding", (0, count(arg or "1", "position")), {}
        if kind == "no_pos":
            return "DropPositionEmbeddings", (), {}
        if kind == "zero_tok0":
            return "ZeroTokenEmbedding", (0,), {}
        if kind == "skip_mlp":
            return "SkipMLP", (), {"layers": layers}
        if kind in ("swap_epe", "swap_pe"):
            return "SwapDirection", (kind.split("_")[1],), {"layer": 0}
        if kind in ("qbar", "wk", "patch0"):
            share = float(arg or 0.0)
            if not math.isfinite(share):
                raise SinkscopeError(
                    f"--edit part '{text}': the share {arg} is not a finite number; e.g. {kind}:0.5"
                )
            if kind == "qbar":
                return "ScaleSharedQuery", (share,), {"layers": layers}
            if kind == "wk":
                return "ZeroKeyCoords", (None,), {"layers": layers, "scale": share}
            return "PatchIndex0", (1.0 - share,), {}
    except ValueError:
        raise SinkscopeError(
            f"--edit part '{text}' has a malformed number; e.g. bq:0.5@3:11"
        ) from None
    raise SinkscopeError(f"--edit part '{text}' is unknown; kinds: {', '.join(KINDS)}")


def _part(text: str) -> Intervention:
    from . import base, edits

    cls, args, kw = _parse(text)
    kind = getattr(edits, cls, None) or getattr(base, cls)
    return kind(*args, **kw)


def edits(specs: dict[str, str]) -> dict[str, Intervention]:
    """``{name: spec}`` -> ``{name: intervention}``, in order (presets, compare and mitigate).

    >>> {k: v.describe() for k, v in edits({"a": "baseline", "half": "qbar:0.5"}).items()}
    {'a': 'baseline', 'half': 'q̄ := 0.5·q̄, effective query bias (all layers)'}
    """
    return {name: parse_edit(f"{name}={spec}")[1] for name, spec in specs.items()}


def _split(item: str) -> tuple[str, list[str]]:
    name, eq, spec = item.partition("=")
    if not eq:
        name, spec = item, item
    parts = [p.strip() for p in spec.split("+") if p.strip()]
    if not name.strip() or not parts:
        raise SinkscopeError(f"--edit '{item}' is empty; write NAME=SPEC, e.g. half_bq=bq:0.5@3:11")
    return name.strip(), parts


def check_edit(item: str) -> str:
    """The name of ``NAME=SPEC`` once its grammar is checked, without building it (torch-free).

    >>> check_edit("half=bq:0.5@3:11")
    'half'
    """
    name, parts = _split(item)
    for p in parts:
        _parse(p)
    return name


def parse_edit(item: str) -> tuple[str, Intervention]:
    """``NAME=SPEC`` (or just ``SPEC``, which is then also the name) -> ``(name, intervention)``."""
    from .base import Compose

    name, parts = _split(item)
    ivs = [_part(p) for p in parts]
    return name, ivs[0] if len(ivs) == 1 else Compose(*ivs)
