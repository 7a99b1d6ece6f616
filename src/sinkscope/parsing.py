"""Flag text -> values, checked without torch (the CLI validates before it imports anything).

Each parser names its flag and the fix in its one-line :class:`SinkscopeError`.

>>> parse_band("3:11"), parse_keys("0,1,1"), parse_strengths("0.5,0")
((3, 11), (0, 1), (1.0, 0.5, 0.0))
>>> int_list("0,1", "--seeds")
(0, 1)
"""

from __future__ import annotations

import math

from .errors import SinkscopeError


def parse_band(text: str | None) -> tuple[int, int] | None:
    """``--layers START:STOP`` (0-based, stop exclusive)."""
    if text is None:
        return None
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise SinkscopeError(
            f"--layers {text} is not START:STOP (0-based, stop exclusive), e.g. 3:11"
        ) from None
    if not 0 <= a < b:
        raise SinkscopeError(
            f"--layers {text}: START must be at least 0 and below STOP "
            "(0-based, stop exclusive), e.g. 3:11"
        )
    return a, b


def parse_keys(text: str) -> tuple[int, ...]:
    """``--keys 0,1``: key positions to track; 0 (the sink) must be among them."""
    try:
        keys = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SinkscopeError(
            f"--keys {text} is not a comma-separated list of positions, e.g. 0,1"
        ) from None
    if not keys or 0 not in keys:
        raise SinkscopeError(f"--keys {text} must include 0 (the sink position), e.g. 0,1")
    return tuple(dict.fromkeys(keys))


def parse_coords(text: str | None) -> list[int] | None:
    """``--coords 138,378,447``: residual coordinates, sorted, each once."""
    if text is None:
        return None
    try:
        coords = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise SinkscopeError(
            f"--coords {text} is not a comma-separated list of residual coordinates, "
            "e.g. 138,378,447"
        ) from None
    if not coords:
        raise SinkscopeError("--coords is empty; give coordinates such as 138,378,447")
    return coords


def parse_strengths(text: str) -> tuple[float, ...]:
    """``--strengths 1,0.5,0``: fractions kept, descending; 1 (unedited) is always added."""
    try:
        given = {float(x) for x in text.split(",") if x.strip()}
        strengths = sorted(given | {1.0}, reverse=True)
    except ValueError:
        raise SinkscopeError(
            f"--strengths {text} is not a comma-separated list of numbers in [0, 1]"
        ) from None
    if not given:
        raise SinkscopeError(f"--strengths {text!r} names no strength; e.g. 1,0.5,0")
    if any(not 0 <= s <= 1 for s in strengths):  # NaN fails this too
        raise SinkscopeError(
            f"--strengths {text}: every strength must lie in [0, 1] (1 = unedited, 0 = removed)"
        )
    return tuple(strengths)


def int_list(text: str, flag: str) -> tuple[int, ...]:
    """A comma-separated list of distinct integers for ``flag``."""
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SinkscopeError(
            f"{flag} {text} is not a comma-separated list of integers, e.g. 0,1,2"
        ) from None
    if not vals:
        raise SinkscopeError(f"{flag} is empty; give e.g. {flag} 0,1")
    if len(set(vals)) < len(vals):
        raise SinkscopeError(f"{flag} {text} repeats a value; give each once")
    return vals


def name_list(text: str, flag: str, choices: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated subset of ``choices`` for ``flag``."""
    names = tuple(e.strip() for e in text.split(",") if e.strip())
    if not names or any(e not in choices for e in names):
        raise SinkscopeError(f"{flag} {text}: choose from {', '.join(choices)}")
    return names


def spec_list(text: str) -> tuple[str, ...]:
    """Comma-separated model specs, each once."""
    return tuple(m.strip() for m in text.split(",") if m.strip())


PAPER_BAND_12 = (3, 11)  # 0-based [start, stop) of the paper's layers 4..11 (1-based) of 12


def layer_band(n_layers: int) -> tuple[int, int]:
    """The paper's middle band, ``[3, 11)`` of 12 layers, scaled to ``n_layers`` (round half up)."""
    start = int(math.floor(PAPER_BAND_12[0] * n_layers / 12 + 0.5))
    stop = int(math.floor(PAPER_BAND_12[1] * n_layers / 12 + 0.5))
    return max(0, start), max(start + 1, min(n_layers, stop))


def resolve_band(band: tuple[int, int] | None, n_layers: int) -> tuple[int, int]:
    """``band`` checked against the model's depth, or the scaled paper band when None."""
    band = tuple(band) if band is not None else layer_band(n_layers)
    if not (0 <= band[0] < band[1] <= n_layers):
        raise SinkscopeError(
            f"layer band {band[0]}:{band[1]} is outside the model's {n_layers} layers; use START:STOP within 0:{n_layers}"
        )
    return band
