"""Interventions: small objects that edit a model for the duration of a ``with`` block.

Weight edits change parameter data in place and put the saved values back on exit (the model
is bit-identical afterwards); activation edits are forward hooks, removed on exit. Compose
with ``+``:

>>> import torch
>>> from transformers import GPT2Config, GPT2LMHeadModel
>>> from sinkscope.models import SinkModel, adapter_for
>>> from sinkscope.interventions import ScaleQueryBias, SkipMLP
>>> hf = GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=32, n_head=4)); sm = SinkModel("m", hf, adapter_for(hf))
>>> before = {k: v.clone() for k, v in hf.state_dict().items()}
>>> edit = ScaleQueryBias(0.5, layers=range(1, 3)) + SkipMLP()
>>> with apply(sm, edit):
...     _ = hf(torch.zeros(1, 4, dtype=torch.long))
>>> all(torch.equal(before[k], v) for k, v in hf.state_dict().items())
True
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import torch

from ..errors import SinkscopeError
from ..models.base import hook_output  # noqa: F401  (re-exported: the edits hook module outputs with it)

if TYPE_CHECKING:
    from ..models import SinkModel
    from ..models.base import Adapter


class NotApplicable(SinkscopeError):
    """The intervention needs a component this architecture does not have."""


@dataclass
class Context:
    """What interventions may need besides the model: massive coordinates, a seed."""

    model: object
    coords: list[int] | None = None
    seed: int = 0
    cache: dict = field(default_factory=dict)

    @property
    def adapter(self) -> Adapter:
        return self.model.adapter


class Intervention:
    """Base class. Subclasses implement :meth:`install` (and :meth:`check` if they need a
    component some architectures lack); ``describe`` is the one-line label of tables;
    ``needs`` names the circuit facts it reads from the context cache (``"q_bar"``)."""

    needs: tuple[str, ...] = ()

    def describe(self) -> str:
        return type(self).__name__

    def check(self, ctx: Context) -> None:
        """Raise :class:`NotApplicable` naming the missing component."""

    def validate(self, ctx: Context) -> None:
        """Raise :class:`SinkscopeError` for arguments outside the model (layers, coordinates,
        positions); run for every intervention before any computation starts."""

    def install(
        self, ctx: Context, stack: contextlib.ExitStack
    ) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __add__(self, other: "Intervention") -> "Compose":
        return Compose(self, other)


class Identity(Intervention):
    """No change (the baseline)."""

    def describe(self) -> str:
        return "baseline"

    def install(self, ctx: Context, stack: contextlib.ExitStack) -> None:
        pass


class Compose(Intervention):
    """Several interventions at once, installed in order."""

    def __init__(self, *parts: Intervention):
        self.parts = [q for p in parts for q in (p.parts if isinstance(p, Compose) else [p])]
        self.needs = tuple(dict.fromkeys(n for p in self.parts for n in p.needs))

    def describe(self) -> str:
        return " + ".join(p.describe() for p in self.parts)

    def check(self, ctx: Context) -> None:
        for p in self.parts:
            p.check(ctx)

    def validate(self, ctx: Context) -> None:
        for p in self.parts:
            p.validate(ctx)

    def install(self, ctx: Context, stack: contextlib.ExitStack) -> None:
        for p in self.parts:
            p.install(ctx, stack)


def edit_inplace(
    stack: contextlib.ExitStack, view: torch.Tensor, fn: Callable[[torch.Tensor], object]
) -> None:
    """Apply ``fn(view)`` in place to a live parameter view; restore the exact bits on exit."""
    saved = view.clone()
    with torch.no_grad():
        fn(view)
    stack.callback(lambda: view.copy_(saved))


@contextlib.contextmanager
def apply(
    model: SinkModel,
    intervention: Intervention,
    *,
    coords: list[int] | None = None,
    seed: int = 0,
    ctx: Context | None = None,
) -> Iterator[Context]:
    """Install ``intervention`` on ``model`` (a ``SinkModel``) for the ``with`` block."""
    ctx = ctx or Context(model, coords=coords, seed=seed)
    intervention.check(ctx)
    with contextlib.ExitStack() as stack:
        intervention.install(ctx, stack)
        yield ctx


def _layers(ctx: Context, layers: Iterable[int] | None) -> list[int]:
    n = ctx.adapter.n_layers
    out = list(range(n)) if layers is None else list(layers)
    if any(not 0 <= l < n for l in out):
        raise SinkscopeError(
            f"{_span(out)} are outside the model's {n} layers; use @START:STOP within 0:{n}"
        )
    return out


def _span(layers) -> str:
    if layers is None:
        return "all layers"
    ls = list(layers)
    if not ls:
        return "no layers"
    return (
        f"layers {ls[0]}..{ls[-1]}"
        if ls == list(range(ls[0], ls[-1] + 1))
        else f"layers {ls[:8]}{'...' if len(ls) > 8 else ''}"
    )
