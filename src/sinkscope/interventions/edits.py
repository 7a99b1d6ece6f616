"""The concrete interventions of the study (and their generalisations)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Iterable, Sequence

import torch

from ..errors import SinkscopeError
from .base import Intervention, NotApplicable, _layers, _span, edit_inplace, hook_output

if TYPE_CHECKING:
    import contextlib

    from .base import Context


class ScaleQueryBias(Intervention):
    """b_Q := scale · b_Q in ``layers`` (all by default) and ``heads`` (all by default); b_K, b_V kept."""

    def __init__(
        self,
        scale: float = 0.0,
        layers: Iterable[int] | None = None,
        heads: Sequence[int] | None = None,
    ):
        self.scale, self.layers, self.heads = (
            float(scale),
            (None if layers is None else list(layers)),
            heads,
        )

    def describe(self) -> str:
        who = _span(self.layers) + ("" if self.heads is None else f", heads {list(self.heads)}")
        return f"b_Q := {self.scale:g}·b_Q ({who})"

    def check(self, ctx: Context) -> None:
        try:
            view = ctx.adapter.query_bias_view(0)
        except SinkscopeError as e:  # a fused layout where b_Q is not one live view
            raise NotApplicable(str(e)) from None
        if view is None:
            raise NotApplicable(f"{ctx.adapter.family} has no query bias")

    def validate(self, ctx: Context) -> None:
        _layers(ctx, self.layers)
        bad = [h for h in self.heads or () if not 0 <= h < ctx.adapter.n_heads]
        if bad:
            raise SinkscopeError(
                f"heads {bad[:5]} are outside the model's {ctx.adapter.n_heads} heads"
            )

    def install(self, ctx: Context, stack: contextlib.ExitStack) -> None:
        heads = slice(None) if self.heads is None else list(self.heads)
        for l in _layers(ctx, self.layers):
            edit_inplace(
                stack,
                ctx.adapter.query_bias_view(l),
                lambda v: v.__setitem__(heads, v[heads] * self.scale),
            )


class ZeroKeyCoords(Intervention):
    """Zero (or, with ``scale``, scale) the W_K input rows of residual coordinates ``coords``
    (default: the context's massive ones)."""

    def __init__(
        self,
        coords: Sequence[int] | None = None,
        layers: Iterable[int] | None = None,
        scale: float = 0.0,
    ):
        self.coords, self.layers = (
            (None if coords is None else list(coords)),
            (None if layers is None else list(layers)),
        )
        self.scale = float(scale)

    def _coords(self, ctx):
        c = self.coords if self.coords is not None else ctx.coords
        if not c:
            raise NotApplicable(
                "no massive coordinates known: pass --coords (the model has no EPE to choose them)"
            )
        return list(c)

    def describe(self) -> str:
        what = "zero" if self.scale == 0 else f"scale by {self.scale:g}"
        return f"{what} W_K rows {self.coords if self.coords is not None else 'of the massive coords'} ({_span(self.layers)})"

    def check(self, ctx: Context) -> None:
        self._coords(ctx)

    def validate(self, ctx: Context) -> None:
        _layers(ctx, self.layers)
        ctx.adapter.check_coords(self.coords, "zero_wk")

    def install(self, ctx: Context, stack: contextlib.ExitStack) -> None:
        coords = self._coords(ctx)
        for l in _layers(ctx, self.layers):
            edit_inplace(
                stack,
                ctx.adapter.key_weight_view(l),
                lambda v: v.__setitem__(coords, v[coords] * self.scale),
            )


from .labels import RANDOM_DRAWS  # noqa: E402


class RandomKeyCoords(Intervention):
    """Control: zero ``n`` W_K input coordinates per layer, drawn with ``random.Random(seed)``.

    ``draw="sinkscope"``: ``n`` distinct coordinates per layer, independently for each layer,
    from the coordinates that are *not* massive. ``draw="paper"``: as the paper's code (which
    calls ``random.seed(42)`` before each example, so every example gets the same draw):
    ``randint(0, d_model - 1)`` ``n`` times for layer 0, then layer 1, ... (repeats and massive
    coordinates allowed); ``layers`` keeps those layers' draws.
    """

    def __init__(
        self,
        n: int = 3,
        seed: int = 0,
        layers: Iterable[int] | None = None,
        draw: str = "sinkscope",
    ):
        if draw not in RANDOM_DRAWS:
            raise SinkscopeError(
                f"the random draw '{draw}' is unknown; use {' or '.join(RANDOM_DRAWS)}"
            )
        self.n, self.seed, self.layers, self.style = (
            n,
            seed,
            (None if layers is None else list(layers)),
            draw,
        )

    def describe(self) -> str:
        if self.style == "paper":
            return f"zero {self.n} random W_K rows per layer (the paper's draw: seed {self.seed} before each example, repeats allowed)"
        return f"zero {self.n} random W_K rows per layer (seed {self.seed})"

    def _pool(self, ctx) -> list[int]:
        massive = set(ctx.coords or [])
        return [d for d in range(ctx.adapter.d_model) if d not in massive]

    def validate(self, ctx: Context) -> None:
        _layers(ctx, self.layers)
        if self.style == "paper":
            if self.n < 1:
                raise SinkscopeError(
                    f"cannot draw {self.n} random W_K rows per layer; use 1 or more"
                )
            return
        pool = len(self._pool(ctx))
        if not 1 <= self.n <= pool:
            raise SinkscopeError(
                f"cannot draw {self.n} random W_K rows per layer: the model has {pool} non-massive coordinates; use 1..{pool}"
            )

    def draw(self, ctx: Context) -> dict[int, list[int]]:
        rng = random.Random(self.seed)
        if self.style == "paper":
            d = ctx.adapter.d_model
            rows = {
                l: [rng.randint(0, d - 1) for _ in range(self.n)]
                for l in range(ctx.adapter.n_layers)
            }
            return {l: rows[l] for l in _layers(ctx, self.layers)}
        pool = self._pool(ctx)
        return {l: sorted(rng.sample(pool, self.n)) for l in _layers(ctx, self.layers)}

    def install(self, ctx: Context, stack: contextlib.ExitStack) -> None:
        drawn = self.draw(ctx)
        ctx.cache["random_key_coords"] = drawn
        ctx.cache["random_key_draw"] = self.style
        for l, coords in drawn.items():
            edit_inplace(
                stack, ctx.adapter.key_weight_view(l), lambda v, c=coords: v.__setitem__(c, 0.0)
            )


class _PositionEdit(Intervention):
    def check(self, ctx: Context) -> None:
        if ctx.adapter.position_embedding_module() is None:
            raise NotApplicable(
                f"{ctx.adapter.family} has no learned absolute positional embedding"
            )


class ReplacePositionEmbedding(_PositionEdit):
    """Index ``position`` gets the positional embedding of ``source`` (paper (c): p_0 := p_1)."""

    def __init__(self, position: int = 0, source: int = 1):
        self.position, self.source = position, source

    def describe(self) -> str:
        return f"p_{self.position} := p_{self.source}"

    def validate(self, ctx: Context) -> None:
        n = ctx.adapter.max_positions()
        if n is not None and not (0 <= self.position < n and 0 <= self.source < n):
            raise SinkscopeError(
                f"positions {self.position} and {self.source} must lie within the model's {n} learned positions (0..{n - 1})"
            )

    def install(self, ctx: Context, stack: contextlib.ExitStack) -> None:
        W = ctx.adapter.W_pos

        def fn(out):
            out = out.clone()
            out[..., self.position, :] = W[self.source]
            return out

        hook_output(stack, ctx.adapter.position_embedding_module(), fn)


class DropPositionEmbeddings(_PositionEdit):
    """No positional embeddings at all (paper (h))."""

    def describe(self) -> str:
        return "no positional embeddings"

    def install(self, ctx: Context, stack: contextlib.ExitStack) -> None:
        hook_output(stack, ctx.adapter.position_embedding_module(), torch.zeros_like)


class ZeroTokenEmbedding(Intervention):
    """The token embedding at ``position`` := 0 (paper (f), a control)."""

    def __init__(self, position: int = 0):
        self.position = position

    def describe(self) -> str:
        return f"token embedding at index {self.position} := 0"

    def install(self, ctx: Context, stack: contextlib.ExitStack) -> None:
        def fn(out):
            out = out.clone()
            out[..., self.position, :] = 0
            return out

        hook_output(stack, ctx.adapter.token_embedding_module(), fn)


class SkipMLP(Intervention):
    """The MLP adds nothing to the residual stream in ``layers`` (all by default; paper (g))."""

    def __init__(self, layers: Iterable[int] | None = None):
        self.layers = None if layers is None else list(layers)

    def describe(self) -> str:
        return f"skip MLP ({_span(self.layers)})"

    def validate(self, ctx: Context) -> None:
        _layers(ctx, self.layers)

    def check(self, ctx: Context) -> None:
        if ctx.adapter.mlp_output_module(0) is None:
            raise NotApplicable(f"{ctx.adapter.family} has no MLP")

    def install(self, ctx: Context, stack: contextlib.ExitStack) -> None:
        for l in _layers(ctx, self.layers):
            ctx.adapter.hook_mlp_output(stack, l, torch.zeros_like)


from .residual_edits import PatchIndex0, ScaleSharedQuery, SwapDirection  # noqa: E402,F401
