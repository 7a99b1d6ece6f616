"""Edits of the residual stream and the shared query: move index 0's EPE / raw-PE component to
index 1 (the paper's (d), (e)), scale the effective query bias q̄, patch index 0's special part
after the creating block."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import torch

from .base import Intervention, NotApplicable, _layers, _span, hook_output

if TYPE_CHECKING:
    import contextlib

    from .base import Context


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

    def describe(self) -> str:
        return f"swap {'EPE' if self.kind == 'epe' else 'raw-PE'} directions of index {self.a}/{self.b} after MLP {self.layer}"

    def check(self, ctx: Context) -> None:
        if ctx.adapter.position_embedding_module() is None:
            raise NotApplicable(
                f"{ctx.adapter.family} has no learned absolute positional embedding (no EPE)"
            )
        if ctx.adapter.mlp_output_module(self.layer) is None:
            raise NotApplicable(f"{ctx.adapter.family} has no MLP")

    def directions(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        from ..analysis.epe import effective_positional_embedding

        n = max(self.a, self.b) + 1
        V = (
            effective_positional_embedding(ctx.adapter, n)
            if self.kind == "epe"
            else ctx.adapter.W_pos[:n]
        )
        u = V / V.norm(dim=-1, keepdim=True)
        return u[self.a], u[self.b]

    def install(self, ctx: Context, stack: contextlib.ExitStack) -> None:
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

    def describe(self) -> str:
        return f"q̄ := {self.scale:g}·q̄, effective query bias ({_span(self.layers)})"

    def validate(self, ctx: Context) -> None:
        _layers(ctx, self.layers)

    def check(self, ctx: Context) -> None:
        if not ctx.adapter.attention_interface:
            raise NotApplicable(
                f"{ctx.adapter.family} has no attention interface to edit queries in"
            )
        if "q_bar" not in ctx.cache:
            raise NotApplicable(
                "no effective query bias computed (run analysis.shared_query and put q_bar in the context cache)"
            )

    def install(self, ctx: Context, stack: contextlib.ExitStack) -> None:
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

    def describe(self) -> str:
        where = f"block {self.block}" if self.block is not None else "the creating block"
        return (
            f"index 0 residual -> {self.fraction:g} of the way to the others' mean, after {where}"
        )

    def check(self, ctx: Context) -> None:
        self._block(ctx)

    def install(self, ctx: Context, stack: contextlib.ExitStack) -> None:
        b = self._block(ctx)
        f = self.fraction

        def fn(x):  # the block's output [batch, pos, d_model] (hook_output unpacks tuples)
            x = x.clone()
            x[:, 0] = x[:, 0] - f * (x[:, 0] - x[:, 1:].mean(1))
            return x

        hook_output(stack, ctx.adapter.layers()[b], fn)
