"""Capture attention *to a few key positions* during an ordinary fused-attention forward pass.

The model runs its normal SDPA kernel, which also returns the per-query log-sum-exp of the
scores. With it, the attention probability from every query ``i`` to a chosen key ``k`` is one
dot product: ``A[i, k] = exp(scale * q_i·k_k + mask[i, k] - lse_i)``. So sink metrics cost
``O(T * |keys|)`` per head instead of materialising ``[T, T]`` patterns.

>>> import torch
>>> from transformers import GPT2Config, GPT2LMHeadModel
>>> from sinkscope.models import adapter_for
>>> torch.manual_seed(0); m = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4)).eval()
<torch._C.Generator object at ...>
>>> with KeyAttentionCapture(adapter_for(m), keys=(0, 1)) as cap:
...     _ = m(torch.randint(0, 100, (3, 10)))
>>> tuple(cap.stacked().shape)  # [batch, layer, head, q_pos, key]
(3, 2, 4, 10, 2)
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Sequence

import torch

from ..errors import SinkscopeError
from .sdpa import sdpa_with_lse, softcapped  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from ..models.base import Adapter

IMPL_NAME = "sinkscope"


def attend_and_capture(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    scale: float,
    keys: Sequence[int],
    *,
    force_reference: bool = False,
    s_aux: torch.Tensor | None = None,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Attention output and the probabilities of every query to ``keys``.

    query ``[B, H, T, D]``; key/value ``[B, H_kv, S, D]`` (repeated for GQA); mask additive or
    boolean (True = keep), broadcastable to ``[B, H, T, S]``, or None with ``is_causal``.
    ``s_aux [H]``: an extra per-head logit with a zero value (off-by-one softmax, learned sinks):
    the normaliser becomes ``logaddexp(lse, s_aux)`` and the output shrinks by ``exp(lse - that)``.
    ``softcap``: Gemma-2's ``c·tanh(s/c)`` on the scaled scores before the mask.
    Returns ``out [B, H, T, D]``, ``probs [B, H, T, len(keys)]`` (float32 or wider: exact in
    reduced precision) and the mass the ``s_aux`` logit takes, ``[B, H, T]`` (None without one).
    """
    B, H, T, D = query.shape
    if key.shape[1] != H:
        rep = H // key.shape[1]
        key = key.repeat_interleave(rep, dim=1)
        value = value.repeat_interleave(rep, dim=1)
    S = key.shape[2]
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill_(
            ~mask, torch.finfo(query.dtype).min
        )
    elif mask is not None and mask.dtype != query.dtype:
        mask = mask.to(query.dtype)
    out, lse = sdpa_with_lse(
        query, key, value, mask, is_causal, scale, force_reference=force_reference, softcap=softcap
    )
    lse = lse.to(torch.promote_types(lse.dtype, torch.float32))
    aux_mass = None
    if s_aux is not None:
        s_aux = s_aux.to(lse.dtype).view(1, -1, 1)
        lse_aux = torch.logaddexp(lse, s_aux)  # [batch, head, q_pos]
        out = out * torch.exp(lse - lse_aux)[..., None].to(out.dtype)
        lse = lse_aux
        aux_mass = torch.exp(s_aux - lse)  # [batch, head, q_pos]: what the sink logit takes
    kidx = torch.as_tensor(list(keys), device=query.device)
    if int(kidx.max()) >= S:
        raise SinkscopeError(
            f"key position {int(kidx.max())} is outside the sequence of {S} tokens; lower --keys"
        )
    # the few selected scores in float64: exact products of the fp32 q, k (cheap: K keys only)
    hp = torch.float64 if query.device.type == "cpu" or query.device.type == "cuda" else query.dtype
    sel = softcapped(
        scale * torch.einsum("bhtd,bhkd->bhtk", query.to(hp), key.index_select(2, kidx).to(hp)),
        softcap,
    )
    if mask is not None:
        sel = sel + mask.index_select(-1, kidx).to(hp)
    if is_causal:
        qpos = torch.arange(T, device=query.device)[:, None] + (S - T)
        sel = sel.masked_fill(kidx[None, :] > qpos, float("-inf"))
    probs = torch.exp(sel - lse.to(hp)[..., None])  # [batch, head, q_pos, key]
    return out, probs.to(torch.promote_types(query.dtype, torch.float32)), aux_mass


def _attention_interface(
    module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs
):
    """``transformers`` attention function (registered as ``attn_implementation="sinkscope"``)."""
    cap: KeyAttentionCapture | None = getattr(module, "_sinkscope_capture", None)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    is_causal = kwargs.get("is_causal")
    is_causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    is_causal = bool(is_causal and attention_mask is None and query.shape[2] > 1)
    if attention_mask is not None and attention_mask.ndim == 4:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
    qedit = getattr(module, "_sinkscope_qedit", None)
    if qedit is not None:  # an intervention on the queries the kernel sees (e.g. ScaleSharedQuery)
        query = qedit(query)
    keys = cap.keys if cap is not None else (0,)
    out, probs, aux = attend_and_capture(
        query,
        key,
        value,
        attention_mask,
        is_causal,
        scaling,
        keys,
        force_reference=cap.force_reference if cap else False,
        s_aux=kwargs.get("s_aux"),
        softcap=kwargs.get("softcap"),
    )
    if cap is not None:
        cap._record(module._sinkscope_layer, probs, query, key, aux)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(IMPL_NAME, _attention_interface)
    ALL_MASK_ATTENTION_FUNCTIONS.register(IMPL_NAME, sdpa_mask)


def route_interface(adapter: Adapter, stack: contextlib.ExitStack) -> None:
    """Point every config of the model at sinkscope's registered attention function until
    ``stack`` closes (the families whose attention goes through transformers' interface)."""
    _register()
    for cfg in _configs(adapter.model):
        saved = cfg._attn_implementation
        cfg._attn_implementation = IMPL_NAME
        stack.callback(setattr, cfg, "_attn_implementation", saved)


_SDPA_ACTIVE: list = []  # the attention module whose forward is running (SDPA-call route)


def route_sdpa_calls(adapter: Adapter, stack: contextlib.ExitStack) -> None:
    """For families that call ``torch.nn.functional.scaled_dot_product_attention`` themselves
    (Falcon): while ``stack`` is open, an attention module's SDPA call goes through
    ``attend_and_capture`` (forward hooks say which module is running; other calls pass)."""
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        module = _SDPA_ACTIVE[-1] if _SDPA_ACTIVE else None
        if module is None:
            return original(
                query,
                key,
                value,
                attn_mask=attn_mask,
                dropout_p=dropout_p,
                is_causal=is_causal,
                scale=scale,
                **kw,
            )
        cap = getattr(module, "_sinkscope_capture", None)
        qedit = getattr(module, "_sinkscope_qedit", None)
        if qedit is not None:
            query = qedit(query)
        out, probs, aux = attend_and_capture(
            query,
            key,
            value,
            attn_mask,
            is_causal,
            query.shape[-1] ** -0.5 if scale is None else scale,
            cap.keys if cap is not None else (0,),
            force_reference=cap.force_reference if cap else False,
        )
        if cap is not None:
            cap._record(module._sinkscope_layer, probs, query, key, aux)
        return out

    for l in range(adapter.n_layers):
        mod = adapter.attention_module(l)
        stack.callback(mod.register_forward_pre_hook(lambda m, args: _SDPA_ACTIVE.append(m)).remove)
        stack.callback(
            mod.register_forward_hook(lambda m, args, out: _SDPA_ACTIVE.remove(m)).remove
        )
    F.scaled_dot_product_attention = sdpa
    stack.callback(setattr, F, "scaled_dot_product_attention", original)
    for cfg in _configs(adapter.model):  # the model's own SDPA branch is the one that calls it
        stack.callback(setattr, cfg, "_attn_implementation", cfg._attn_implementation)
        cfg._attn_implementation = "sdpa"
    stack.callback(_SDPA_ACTIVE.clear)


def use_sinkscope_attention(adapter: Adapter, stack: contextlib.ExitStack) -> None:
    """Route the model's attention through sinkscope's function until ``stack`` closes (for
    query edits outside a capture). Raises for GPT-Neo, whose attention sinkscope replaces
    without seeing its queries."""
    from ..errors import SinkscopeError

    if not adapter.attention_interface:
        raise SinkscopeError(f"{adapter.family} has no attention interface to edit queries in")
    adapter.route_attention(stack)


class NonFiniteError(SinkscopeError):
    """The forward pass produced NaN / inf (overflow, or an edit that pushed it there)."""


def check_finite_attention(probs: torch.Tensor) -> None:
    """Raise :class:`NonFiniteError` naming the first layer whose captured attention ``probs
    [batch, layer, ...]`` holds NaN / inf, instead of letting NaN flow into the tables."""
    bad = ~torch.isfinite(probs.flatten(2)).all(-1).all(0)  # [layer]
    if bool(bad.any()):
        first = int(bad.nonzero()[0])
        raise NonFiniteError(
            f"attention became NaN / inf in layer {first} (0-based) during the forward pass "
            "(an overflow, or an edit that drove activations there); check the weights and edits"
        )


class KeyAttentionCapture:
    """Context manager: while active, the model's attention records ``A[:, :, :, keys]``.

    ``probs[layer]`` is ``[batch, head, q_pos, len(keys)]``; :meth:`stacked` gives
    ``[batch, layer, head, q_pos, key]``. Only these slices are kept, never ``[T, T]`` patterns.
    The model's attention implementation is restored on exit.
    """

    def __init__(
        self,
        adapter,
        keys: Sequence[int] = (0,),
        *,
        force_reference: bool = False,
        record_qk: bool = False,
    ):
        self.adapter = adapter
        self.keys = tuple(int(k) for k in keys)
        if not self.keys or min(self.keys) < 0:
            raise SinkscopeError("--keys must be non-negative token positions, e.g. 0,1")
        self.force_reference = force_reference
        self.record_qk = record_qk
        self.probs: dict[int, torch.Tensor] = {}
        self.aux: dict[int, torch.Tensor] = {}  # [batch, head, q_pos]: mass of a learned sink logit
        self.qk: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _record(
        self, layer: int, probs: torch.Tensor, query: torch.Tensor, key: torch.Tensor, aux=None
    ) -> None:
        self.probs[layer] = probs
        if aux is not None:
            self.aux[layer] = aux
        if (
            self.record_qk
        ):  # the exact q, k the kernel saw: [batch, head, pos, d_head] (K per KV head)
            self.qk[layer] = (query.detach(), key.detach())

    def scores(self) -> torch.Tensor:
        """The model's own unscaled scores ``q_i·k_j``: ``[batch, layer, head, q_pos, k_pos]``
        (needs ``record_qk=True``; K repeated per query head under GQA)."""
        if not self.qk:
            raise RuntimeError("construct the capture with record_qk=True to get scores")
        out = []
        for layer in range(self.adapter.n_layers):
            q, k = self.qk[layer]
            if k.shape[1] != q.shape[1]:
                k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            out.append(q @ k.transpose(-1, -2))
        return torch.stack(out, dim=1)

    def stacked(self) -> torch.Tensor:
        """``[batch, layer, head, q_pos, key]`` for the last forward pass."""
        n = self.adapter.n_layers
        missing = [l for l in range(n) if l not in self.probs]
        if missing:
            raise RuntimeError(
                f"no attention captured for layers {missing}: did the forward pass run inside the context?"
            )
        out = torch.stack([self.probs[l] for l in range(n)], dim=1)
        check_finite_attention(out)
        return out

    def stacked_aux(self) -> torch.Tensor | None:
        """``[batch, layer, head, q_pos]``: the attention mass each query gives a learned sink
        logit (GPT-OSS; 0 in layers without one), or None when no layer has one. With it, a
        query's attention to every key plus this mass is 1."""
        if not self.aux:
            return None
        ref = next(iter(self.aux.values()))
        return torch.stack(
            [self.aux.get(l, torch.zeros_like(ref)) for l in range(self.adapter.n_layers)], dim=1
        )

    def reset(self) -> None:
        self.probs = {}
        self.aux = {}
        self.qk = {}

    def __enter__(self):
        self.adapter.require_forward()
        self._mods = [self.adapter.attention_module(l) for l in range(self.adapter.n_layers)]
        for l, mod in enumerate(self._mods):
            mod._sinkscope_capture = self
            mod._sinkscope_layer = l
        self._restore = contextlib.ExitStack()
        self.adapter.route_attention(
            self._restore
        )  # the model's attention now calls attend_and_capture
        return self

    def __exit__(self, *exc):
        for mod in self._mods:
            for attr in ("_sinkscope_capture", "_sinkscope_layer"):
                if attr in mod.__dict__:
                    delattr(mod, attr)
        self._restore.close()
        return False


def _configs(model):
    """Every distinct config object the model's submodules consult."""
    seen, out = set(), []
    for mod in model.modules():
        cfg = getattr(mod, "config", None)
        if cfg is not None and id(cfg) not in seen and hasattr(cfg, "_attn_implementation"):
            seen.add(id(cfg))
            out.append(cfg)
    return out
