"""One vocabulary for every architecture: the :class:`Adapter`.

An adapter wraps a Hugging Face causal LM (possibly a *partial* one whose missing tensors live
on the ``meta`` device) and exposes what the sink analyses need, stacked over layers, in the
TransformerLens orientation (``x @ W``)::

    W_Q, W_K, W_V   # [layer, head, d_model, d_head]   (K/V repeated per query head under GQA)
    b_Q, b_K, b_V   # [layer, head, d_head]            (zeros where the model has no bias)
    W_O             # [layer, head, d_head, d_model]
    b_O             # [layer, d_model]
    W_pos           # [n_ctx, d_model] or None         (``positional`` says "learned"/"rotary"/"none")
    W_E             # [vocab, d_model]

plus the raw modules to *apply* LayerNorm / RMSNorm and the MLP exactly as the model does
(``ln1(layer, x)``, ``mlp(layer, x)``). Parameters are read from the live modules on every
access and are never folded: ``b_Q`` is the model's own query bias.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from ..errors import MissingTensorsError, SinkscopeError
from .heads import linear_heads, linear_out, linear_qkv  # noqa: F401  (re-exported: the adapters use them)
from .rotary import Rotary  # noqa: F401  (re-exported: the adapters return it)

if TYPE_CHECKING:
    from collections.abc import Iterable
    from contextlib import ExitStack

    from transformers import PretrainedConfig

    TensorFn = Callable[[torch.Tensor], torch.Tensor]  # replaces a module's output


def hook_output(stack: ExitStack, module: nn.Module, fn: TensorFn) -> None:
    """Replace ``module``'s output by ``fn(output)`` while the ``ExitStack`` is open (of its first
    element when it returns a tuple: decoder blocks, MoE MLPs with their router scores)."""

    def hook(mod, args, out):
        return (fn(out[0]), *out[1:]) if isinstance(out, tuple) else fn(out)

    stack.callback(module.register_forward_hook(hook).remove)


@dataclass(frozen=True, kw_only=True)
class ArchInfo:
    """Which circuit components an architecture has (keyword fields: ``ArchInfo(family="gpt2",
    positional="learned", norm="layernorm", has_query_bias=True, has_mlp=True, qk_norm=False)``)."""

    family: str
    positional: str  # "learned" | "rotary" | "none"
    norm: str  # "layernorm" | "rmsnorm"
    has_query_bias: bool
    has_mlp: bool
    qk_norm: bool
    # attention and MLP read the same residual (GPT-J, GPT-NeoX, Falcon, Phi)
    parallel: bool = False
    # a learned per-head logit with no value takes attention mass (GPT-OSS)
    sink_logit: bool = False


class Adapter(ABC):
    """Base class; one subclass per architecture family (see ``models/<family>.py``).

    Subclasses implement the per-layer accessors ``_q/_k/_v(layer) -> (W [H, d, dh], b [H, dh] | None)``,
    ``_o(layer) -> (W [H, dh, d], b [d] | None)``, and the module lookups below. Everything
    sinkscope knows about an architecture lives in its adapter: how it is loaded
    (``attn_implementation``), how its attention is captured (:meth:`route_attention`), its scales.
    """

    family: str = "base"
    model_types: tuple[str, ...] = ()
    # what the model is loaded with (the capture replaces it while active)
    attn_implementation: str = "sdpa"
    # sinkscope's attention sees the kernel's queries (query edits work)
    attention_interface: bool = True

    @classmethod
    def attn_implementation_for(cls, config: PretrainedConfig) -> str:
        """The attention implementation to load ``config``'s model with: the family's, or eager
        where transformers has no SDPA path for it (Gemma-2's softcapping, GPT-OSS's sinks)."""
        if cls.attn_implementation != "sdpa":
            return cls.attn_implementation
        from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

        try:
            model_cls = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
        except KeyError:
            return "sdpa"
        return "sdpa" if getattr(model_cls, "_supports_sdpa", True) else "eager"

    def route_attention(self, stack: ExitStack) -> None:
        """Send every layer's attention through sinkscope's ``attend_and_capture`` until ``stack``
        closes (the capture and the query edits use this). Default: transformers' attention
        interface; families without one override it."""
        from ..metrics.capture import route_interface

        route_interface(self, stack)

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config

    # ---- sizes --------------------------------------------------------------------------------
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int

    # ---- per-family hooks ---------------------------------------------------------------------
    @abstractmethod
    def info(self) -> ArchInfo:
        """The circuit components this model has."""

    @abstractmethod
    def layers(self) -> list[nn.Module]:
        """The transformer blocks, in order."""

    @abstractmethod
    def attention_module(self, layer: int) -> nn.Module:
        """The attention module of block ``layer`` (whose forward the capture routes)."""

    def attn_scale(self, layer: int) -> float:
        """The factor the model multiplies ``q·k`` by before the softmax."""
        return self.d_head**-0.5

    def query_prescale(self, layer: int) -> float:
        """Factor already applied to the queries the attention kernel sees (OPT scales q_proj's
        output); the model's unscaled score is ``q·k / query_prescale``."""
        return 1.0

    def rope(
        self,
        layer: int,
        T: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Rotary | None:
        """The :class:`Rotary` embedding layer ``layer`` applies to q and k, or None."""
        return None

    def trunk(self) -> nn.Module:
        """The transformer without the LM head (what ``measure`` runs)."""
        return self.model.base_model

    # ---- parameter access ---------------------------------------------------------------------
    def _names(self) -> dict[int, str]:
        if not hasattr(self, "_name_cache"):
            self._name_cache = {}
            for n, p in self.model.named_parameters(remove_duplicate=False):
                self._name_cache.setdefault(id(p), n)  # tied weights: keep the first (owning) name
        return self._name_cache

    def _need(self, *tensors: torch.Tensor | None, what: str = "this computation") -> None:
        missing = [self._names().get(id(t), "?") for t in tensors if t is not None and t.is_meta]
        if missing:
            raise MissingTensorsError(missing, what)

    def missing_tensors(self) -> list[str]:
        """Names of parameters this (partial) checkpoint does not have."""
        return [n for n, p in self.model.named_parameters() if p.is_meta]

    def require_forward(self) -> None:
        """Raise a clear error if a forward pass is impossible (partial checkpoint)."""
        missing = self.missing_tensors()
        if missing:
            raise MissingTensorsError(missing, "a forward pass")

    def max_positions(self) -> int | None:
        """The longest input the model can run: the rows of a learned positional embedding (a
        longer input would index past it), or None where positions set no hard limit (rotary
        or no positions: longer inputs run, beyond what the model was trained on)."""
        if self.info().positional != "learned":
            return None
        try:
            return int(self.W_pos.shape[0])
        except MissingTensorsError:
            return None

    def check_coords(self, coords: Iterable[int] | None, what: str = "--coords") -> None:
        """Raise a clear error for residual coordinates outside ``0..d_model-1``."""
        bad = [c for c in coords or () if not 0 <= int(c) < self.d_model]
        if bad:
            raise SinkscopeError(
                f"{what}: coordinate(s) {', '.join(map(str, bad[:5]))} outside the model's "
                f"{self.d_model} residual coordinates (0..{self.d_model - 1})"
            )

    def check_length(self, T: int) -> None:
        """Raise a clear error for inputs longer than :meth:`max_positions`."""
        limit = self.max_positions()
        if limit is not None and T > limit:
            raise SinkscopeError(
                f"inputs of {T} tokens do not fit this model's {limit} learned positions; use --max-tokens {limit} or less"
            )

    def _stack(self, fn: Callable[[int], torch.Tensor]) -> torch.Tensor:
        return torch.stack([fn(layer) for layer in range(self.n_layers)])

    def _kv_expand(self, t: torch.Tensor) -> torch.Tensor:
        rep = self.n_heads // self.n_kv_heads
        return t.repeat_interleave(rep, dim=0) if rep > 1 else t

    def _checked(self, wb, shape_w, shape_b):
        w, b = wb
        self._need(w, b)
        assert tuple(w.shape) == shape_w, (tuple(w.shape), shape_w)
        if b is None:
            b = torch.zeros(shape_b, dtype=w.dtype, device=w.device)
        assert tuple(b.shape) == shape_b, (tuple(b.shape), shape_b)
        return w.detach(), b.detach()

    def q(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W_Q [H, d, dh], b_Q [H, dh])`` of one layer."""
        return self._checked(
            self._q(layer), (self.n_heads, self.d_model, self.d_head), (self.n_heads, self.d_head)
        )

    def k(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W_K, b_K)`` per query head (GQA key heads repeated)."""
        w, b = self._checked(
            self._k(layer),
            (self.n_kv_heads, self.d_model, self.d_head),
            (self.n_kv_heads, self.d_head),
        )
        return self._kv_expand(w), self._kv_expand(b)

    def v(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        w, b = self._checked(
            self._v(layer),
            (self.n_kv_heads, self.d_model, self.d_head),
            (self.n_kv_heads, self.d_head),
        )
        return self._kv_expand(w), self._kv_expand(b)

    def o(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._checked(
            self._o(layer), (self.n_heads, self.d_head, self.d_model), (self.d_model,)
        )

    # [layer, head, d_model, d_head]
    W_Q = property(lambda self: self._stack(lambda l: self.q(l)[0]))
    b_Q = property(lambda self: self._stack(lambda l: self.q(l)[1]))  # [layer, head, d_head]
    # [layer, head, d_model, d_head]
    W_K = property(lambda self: self._stack(lambda l: self.k(l)[0]))
    b_K = property(lambda self: self._stack(lambda l: self.k(l)[1]))  # [layer, head, d_head]
    # [layer, head, d_model, d_head]
    W_V = property(lambda self: self._stack(lambda l: self.v(l)[0]))
    b_V = property(lambda self: self._stack(lambda l: self.v(l)[1]))  # [layer, head, d_head]
    # [layer, head, d_head, d_model]
    W_O = property(lambda self: self._stack(lambda l: self.o(l)[0]))
    b_O = property(lambda self: self._stack(lambda l: self.o(l)[1]))  # [layer, d_model]

    # ---- norms, MLP, embeddings ---------------------------------------------------------------
    def ln1_module(self, layer: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def ln2_module(self, layer: int) -> nn.Module | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def ln_final_module(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def mlp_module(self, layer: int) -> nn.Module | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def token_embedding_module(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _norm_params(
        self, mod: nn.Module | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if mod is None:
            return None, None
        w = getattr(mod, "weight", None)
        b = getattr(mod, "bias", None)
        return (w.detach() if w is not None else None, b.detach() if b is not None else None)

    def ln1_params(self, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(weight, bias|None)`` of the norm before attention, raw (no folding)."""
        return self._norm_params(self.ln1_module(layer))

    def ln2_params(self, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return self._norm_params(self.ln2_module(layer))

    def ln1(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Apply the model's own pre-attention norm of ``layer`` to ``x [..., d_model]``."""
        mod = self.ln1_module(layer)
        self._need(*mod.parameters(), what=f"ln1 of layer {layer}")
        return mod(x)

    def ln2(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        mod = self.ln2_module(layer)
        if mod is None:
            return x
        self._need(*mod.parameters(), what=f"ln2 of layer {layer}")
        return mod(x)

    def mlp(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Apply layer ``layer``'s MLP (no norm) to ``x [..., d_model]``."""
        mod = self.mlp_module(layer)
        if mod is None:
            raise MissingTensorsError([f"layer {layer} MLP (the architecture has none)"], "mlp()")
        self._need(*mod.parameters(), what=f"the MLP of layer {layer}")
        out = mod(x)
        return out[0] if isinstance(out, tuple) else out  # MoE MLPs also return router scores

    @property
    def W_E(self) -> torch.Tensor:
        """Token embedding ``[vocab, d_model]`` (before any model-specific scaling)."""
        w = self.token_embedding_module().weight
        self._need(w, what="the token embedding")
        return w.detach()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings as the model computes them (with e.g. Gemma's sqrt(d) scaling)."""
        mod = self.token_embedding_module()
        self._need(mod.weight, what="the token embedding")
        return mod(ids)

    @property
    def W_pos(self) -> torch.Tensor | None:
        """Learned absolute positional embedding ``[n_ctx, d_model]``, or None."""
        return None

    def position_embedding_module(self) -> nn.Module | None:
        """The module whose output is added as absolute positions (None: rotary / no positions)."""
        return None

    def mlp_output_module(self, layer: int) -> nn.Module | None:
        """The module whose output is the MLP's contribution to the residual stream."""
        return self.mlp_module(layer)

    def hook_mlp_output(self, stack: ExitStack, layer: int, fn: TensorFn) -> None:
        """While ``stack`` is open, layer ``layer``'s MLP contribution ``[batch, pos, d_model]``
        becomes ``fn(it)``."""
        hook_output(stack, self.mlp_output_module(layer), fn)

    # ---- live views of parameters, for in-place (and exactly undone) weight edits -------------
    def query_bias_view(self, layer: int) -> torch.Tensor | None:  # pragma: no cover - abstract
        """``[head, d_head]`` view of the live query-bias data, or None if the model has none."""
        raise NotImplementedError

    def key_weight_view(self, layer: int) -> torch.Tensor:  # pragma: no cover - abstract
        """``[d_model (input coordinate), kv_head * d_head]`` view of the live key weight."""
        raise NotImplementedError

    def describe(self) -> dict:
        info = self.info()
        return {
            "family": info.family,
            "model_type": getattr(self.config, "model_type", "?"),
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "d_model": self.d_model,
            "d_head": self.d_head,
            "positional": info.positional,
            "norm": info.norm,
            "has_query_bias": info.has_query_bias,
            "has_mlp": info.has_mlp,
            "qk_norm": info.qk_norm,
            "parallel": info.parallel,
            "sink_logit": info.sink_logit,
            "adapter": type(self).__name__,
            "missing_tensors": len(self.missing_tensors()),
        }


class SeparateQKVAdapter(Adapter):
    """Families with one ``nn.Linear`` each for Q, K, V (``q_proj``...) and the output projection."""

    out_proj_name = "o_proj"

    def _q(self, layer):
        return linear_qkv(self.attention_module(layer).q_proj, self.n_heads)

    def _k(self, layer):
        return linear_qkv(self.attention_module(layer).k_proj, self.n_kv_heads)

    def _v(self, layer):
        return linear_qkv(self.attention_module(layer).v_proj, self.n_kv_heads)

    def _o(self, layer):
        return linear_out(getattr(self.attention_module(layer), self.out_proj_name), self.n_heads)

    def query_bias_view(self, layer: int) -> torch.Tensor | None:
        b = self.attention_module(layer).q_proj.bias
        return None if b is None else b.data.view(self.n_heads, self.d_head)

    def key_weight_view(self, layer: int) -> torch.Tensor:
        return self.attention_module(layer).k_proj.weight.data.T  # nn.Linear [out, in] -> [in, out]
