"""User-facing errors.

Every problem a user can fix (a wrong path, an unsupported model, an empty input file) is raised
as a :class:`SinkscopeError`; the CLI prints its one-line message and exits with code 2.
"""

from __future__ import annotations


class SinkscopeError(Exception):
    """A problem with the user's input; the message names the problem and the fix."""


def check_number(flag: str, x: float, lo: float, hi: float, *, hi_open: bool = False) -> float:
    """A float option that must be finite and within ``[lo, hi]`` (or ``[lo, hi)``).

    >>> check_number("--eps", 2.0, 0, 1, hi_open=True)
    Traceback (most recent call last):
    sinkscope.errors.SinkscopeError: --eps 2.0 must be a number in [0, 1)
    """
    import math

    if not math.isfinite(x) or x < lo or x > hi or (hi_open and x == hi):
        raise SinkscopeError(
            f"{flag} {x} must be a number in [{lo:g}, {hi:g}{')' if hi_open else ']'}"
        )
    return x


class MissingTensorsError(SinkscopeError):
    """A partial checkpoint lacks tensors that the requested computation needs."""

    def __init__(self, names: list[str], what: str = "this computation"):
        self.names = list(names)
        super().__init__(
            f"{what} needs tensors this checkpoint does not have: {compress_names(self.names)}; "
            "load a complete checkpoint (a HF directory, hub id or .gguf) instead"
        )


def compress_names(names: list[str]) -> str:
    """Collapse per-layer names: ``h.0.mlp.w, h.1.mlp.w`` -> ``h.{0..1}.mlp.w``.

    >>> compress_names(["a.h.0.w", "a.h.1.w", "a.h.2.w", "b"])
    'a.h.{0..2}.w, b'
    """
    import re

    groups: dict[str, list[int]] = {}
    order: list[str] = []
    for n in names:
        m = re.match(r"^(.*?\.)(\d+)(\..*)$", n)
        key = f"{m.group(1)}{{}}{m.group(3)}" if m else n
        if key not in groups:
            groups[key] = []
            order.append(key)
        if m:
            groups[key].append(int(m.group(2)))
    out = []
    for key in order:
        idx = sorted(groups[key])
        if not idx:
            out.append(key)
        elif len(idx) == 1:
            out.append(key.replace("{}", str(idx[0])))
        elif idx == list(range(idx[0], idx[-1] + 1)):
            out.append(key.replace("{}", f"{{{idx[0]}..{idx[-1]}}}"))
        else:
            out.append(key.replace("{}", "{" + ",".join(map(str, idx)) + "}"))
    return ", ".join(out)
