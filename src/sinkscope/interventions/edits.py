"""The concrete interventions of the study (and their generalisations)."""

from __future__ import annotations

import random
from typing import Iterable, Sequence

import torch

from ..errors import SinkscopeError
from .base import Context, Intervention, NotApplicable, edit_inplace, hook_output


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

    def describe(self):
        who = _span(self.layers) + ("" if self.heads is None else f", heads {list(self.heads)}")
        return f"b_Q := {self.scale:g}·b_Q ({who})"

    def check(self, ctx):
        try:
            view = ctx.adapter.query_bias_view(0)
        except SinkscopeError as e:  # a fused layout where b_Q is not one live view
            raise NotApplicable(str(e)) from None
        if view is None:
            raise NotApplicable(f"{ctx.adapter.family} has no query bias")

    def validate(self, ctx):
        _layers(ctx, self.layers)
        bad = [h for h in self.heads or () if not 0 <= h < ctx.adapter.n_heads]
        if bad:
            raise SinkscopeError(
                f"heads {bad[:5]} are outside the model's {ctx.adapter.n_heads} heads"
            )

    def install(self, ctx, stack):
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

    def describe(self):
        what = "zero" if self.scale == 0 else f"scale by {self.scale:g}"
        return f"{what} W_K rows {self.coords if self.coords is not None else 'of the massive coords'} ({_span(self.layers)})"

    def check(self, ctx):
        self._coords(ctx)

    def validate(self, ctx):
        _layers(ctx, self.layers)
        ctx.adapter.check_coords(self.coords, "zero_wk")

    def install(self, ctx, stack):
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

    def describe(self):
        if self.style == "paper":
            return f"zero {self.n} random W_K rows per layer (the paper's draw: seed {self.seed} before each example, repeats allowed)"
        return f"zero {self.n} random W_K rows per layer (seed {self.seed})"

    def _pool(self, ctx) -> list[int]:
        massive = set(ctx.coords or [])
        return [d for d in range(ctx.adapter.d_model) if d not in massive]

    def validate(self, ctx):
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

    def draw(self, ctx) -> dict[int, list[int]]:
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

    def install(self, ctx, stack):
        drawn = self.draw(ctx)
        ctx.cache["random_key_coords"] = drawn
        ctx.cache["random_key_draw"] = self.style
        for l, coords in drawn.items():
            edit_inplace(
                stack, ctx.adapter.key_weight_view(l), lambda v, c=coords: v.__setitem__(c, 0.0)
            )


class _PositionEdit(Intervention):
    def check(self, ctx):
        if ctx.adapter.position_embedding_module() is None:
            raise NotApplicable(
                f"{ctx.adapter.family} has no learned absolute positional embedding"
            )


class ReplacePositionEmbedding(_PositionEdit):
    """Index ``position`` gets the positional embedding of ``source`` (paper (c): p_0 := p_1)."""

    def __init__(self, position: int = 0, source: int = 1):
        self.position, self.source = position, source

    def describe(self):
        return f"p_{self.position} := p_{self.source}"

    def validate(self, ctx):
        n = ctx.adapter.max_positions()
        if n is not None and not (0 <= self.position < n and 0 <= self.source < n):
            raise SinkscopeError(
                f"positions {self.position} and {self.source} must lie within the model's {n} learned positions (0..{n - 1})"
            )

    def install(self, ctx, stack):
        W = ctx.adapter.W_pos

        def fn(out):
            out = out.clone()
            out[..., self.position, :] = W[self.source]
            return out

        hook_output(stack, ctx.adapter.position_embedding_module(), fn)


class DropPositionEmbeddings(_PositionEdit):
    """No positional embeddings at all (paper (h))."""

    def describe(self):
        return "no positional embeddings"

    def install(self, ctx, stack):
        hook_output(stack, ctx.adapter.position_embedding_module(), torch.zeros_like)


class ZeroTokenEmbedding(Intervention):
    """The token embedding at ``position`` := 0 (paper (f), a control)."""

    def __init__(self, position: int = 0):
        self.position = position

    def describe(self):
        return f"token embedding at index {self.position} := 0"

    def install(self, ctx, stack):
        def fn(out):
            out = out.clone()
            out[..., self.position, :] = 0
            return out

        hook_output(stack, ctx.adapter.token_embedding_module(), fn)


class SkipMLP(Intervention):
    """The MLP adds nothing to the residual stream in ``layers`` (all by default; paper (g))."""

    def __init__(self, layers: Iterable[int] | None = None):
        self.layers = None if layers is None else list(layers)

    def describe(self):
        return f"skip MLP ({_span(self.layers)})"

    def validate(self, ctx):
        _layers(ctx, self.layers)

    def check(self, ctx):
        if ctx.adapter.mlp_output_module(0) is None:
            raise NotApplicable(f"{ctx.adapter.family} has no MLP")

    def install(self, ctx, stack):
        for l in _layers(ctx, self.layers):
            ctx.adapter.hook_mlp_output(stack, l, torch.zeros_like)


class SwapDirection(Intervention):
    """After layer ``layer``'s MLP, move a direction's component from index ``a`` to index ``b``.

    With u_a, u_b the unit directions (``kind="epe"``: EPE_a, EPE_b; ``kind="pe"``: raw p_a, p_b)
    and α = ⟨MLP-out at index a, u_a⟩ per example, index a gets −α·u_a + α·u_b added and index b
    the opposite, +α·u_a − α·u_b (paper (d), and (e) as its raw-PE control).
    """

    def __init__(self, kind: str = "epe", layer: int = 0, a: int = 0, b: int = 1):
        if kind not in ("epe", "pe"):
            raise ValueError("kind must be 'epe' or 'pe'")
        self.kind, self.layer, self.a, self.b = kind, layer, a, b

    def describe(self):
        return f"swap {'EPE' if self.kind == 'epe' else 'raw-PE'} directions of index {self.a}/{self.b} after MLP {self.layer}"

    def check(self, ctx):
        if ctx.adapter.position_embedding_module() is None:
            raise NotApplicable(
                f"{ctx.adapter.family} has no learned absolute positional embedding (no EPE)"
            )
        if ctx.adapter.mlp_output_module(self.layer) is None:
            raise NotApplicable(f"{ctx.adapter.family} has no MLP")

    def directions(self, ctx) -> tuple[torch.Tensor, torch.Tensor]:
        from ..analysis.epe import effective_positional_embedding

        n = max(self.a, self.b) + 1
        V = (
            effective_positional_embedding(ctx.adapter, n)
            if self.kind == "epe"
            else ctx.adapter.W_pos[:n]
        )
        u = V / V.norm(dim=-1, keepdim=True)
        return u[self.a], u[self.b]

    def install(self, ctx, stack):
        ua, ub = self.directions(ctx)

        def fn(out):  # out: [batch, pos, d_model], the MLP's contribution
            alpha = out[:, self.a] @ ua  # [batch]
            shift = alpha[:, None] * (ub - ua)  # [batch, d_model]
            out = out.clone()
            out[:, self.a] += shift
            out[:, self.b] -= shift
            return out

        ctx.adapter.hook_mlp_output(stack, self.layer, fn)


class ScaleSharedQuery(Intervention):
    """Keep ``scale`` of each head's effective query bias q̄ (``analysis.shared_query``): every
    query the kernel sees becomes ``q_i - (1 - scale)·R_i q̄``. The architecture-independent
    counterpart of ``b_Q := scale·b_Q`` (needs ``ctx.cache["q_bar"]`` ``[layer, head, d_head]``)."""

    needs = ("q_bar",)

    def __init__(self, scale: float = 0.0, layers: Iterable[int] | None = None):
        self.scale, self.layers = float(scale), (None if layers is None else list(layers))

    def describe(self):
        return f"q̄ := {self.scale:g}·q̄, effective query bias ({_span(self.layers)})"

    def validate(self, ctx):
        _layers(ctx, self.layers)

    def check(self, ctx):
        if not ctx.adapter.attention_interface:
            raise NotApplicable(
                f"{ctx.adapter.family} has no attention interface to edit queries in"
            )
        if "q_bar" not in ctx.cache:
            raise NotApplicable(
                "no effective query bias computed (run analysis.shared_query and put q_bar in the context cache)"
            )

    def install(self, ctx, stack):
        from ..analysis.shared_query import rotate
        from ..metrics.capture import use_sinkscope_attention

        ad = ctx.adapter
        q_bar = ctx.cache["q_bar"]
        for l in _layers(ctx, self.layers):
            mod = ad.attention_module(l)
            tables: dict = {}

            def qedit(query, l=l, tables=tables):
                T = query.shape[2]
                if T not in tables:
                    rope = ad.rope(l, T, device=query.device)
                    shift = (
                        q_bar[l]
                        .to(device=query.device, dtype=query.dtype)[:, None, :]
                        .expand(-1, T, -1)
                    )  # [head, pos, d_head]
                    tables[T] = rotate(shift, None if rope is None else rope.to(query.dtype))
                return query - (1.0 - self.scale) * tables[T][None, :, -T:]

            mod._sinkscope_qedit = qedit
            stack.callback(delattr, mod, "_sinkscope_qedit")
        use_sinkscope_attention(ad, stack)


class PatchIndex0(Intervention):
    """After block ``block`` (default: the context's creating block), move index 0's residual a
    fraction ``fraction`` of the way to the mean of the other positions (1: replace it)."""

    def __init__(self, fraction: float = 1.0, block: int | None = None):
        self.fraction, self.block = float(fraction), block

    def _block(self, ctx):
        b = self.block if self.block is not None else ctx.cache.get("creating_block")
        if b is None or b < 0:
            raise NotApplicable(
                "index 0 is never special in the residual stream (no creating block)"
                if b is None
                else "index 0 is special from the embeddings on (no block creates it)"
            )
        return int(b)

    def describe(self):
        where = f"block {self.block}" if self.block is not None else "the creating block"
        return (
            f"index 0 residual -> {self.fraction:g} of the way to the others' mean, after {where}"
        )

    def check(self, ctx):
        self._block(ctx)

    def install(self, ctx, stack):
        b = self._block(ctx)
        f = self.fraction

        def fn(x):  # the block's output [batch, pos, d_model] (hook_output unpacks tuples)
            x = x.clone()
            x[:, 0] = x[:, 0] - f * (x[:, 0] - x[:, 1:].mean(1))
            return x

        hook_output(stack, ctx.adapter.layers()[b], fn)
