"""One adapter for any decoder-only Hugging Face LM, read off its module structure.

:class:`GenericAdapter` finds the blocks (the ``nn.ModuleList`` with one entry per layer), each
block's attention, norms and MLP, and the attention's projections, separate (``q_proj`` ...) or
fused (``qkv_proj``, ``query_key_value``) in one of the known row layouts. What it cannot find it
reports as absent (``info()``), so analyses say "not applicable, because ..." instead of guessing.
A family needs a subclass only for what the structure does not show (a fused layout, GPT-J's
interleaved rotary, OLMo-2's post-norm blocks); those live in ``models/families.py``.

>>> from transformers import MistralConfig, MistralForCausalLM
>>> m = MistralForCausalLM(MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
...                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=100))
>>> a = GenericAdapter(m)
>>> a.n_layers, a.n_heads, a.n_kv_heads, a.d_head, a.info().positional, a.info().norm
(2, 4, 2, 8, 'rotary', 'rmsnorm')
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import SinkscopeError
from .base import Adapter, ArchInfo, Rotary, linear_out, linear_qkv

if TYPE_CHECKING:
    from contextlib import ExitStack

ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention")
Q_NAMES, K_NAMES, V_NAMES = (
    ("q_proj", "query", "q"),
    ("k_proj", "key", "k"),
    ("v_proj", "value", "v"),
)
FUSED_NAMES = ("qkv_proj", "query_key_value", "Wqkv", "qkv", "c_attn")
OUT_NAMES = ("o_proj", "out_proj", "dense", "c_proj", "o")
LN1_NAMES = (
    "input_layernorm",
    "ln_1",
    "ln_attn",
    "self_attn_layer_norm",
    "attention_norm",
    "norm1",
)
# the MLP's own input norm, in preference order (Gemma's post_attention_layernorm is a sandwich norm)
LN2_NAMES = (
    "pre_feedforward_layernorm",
    "ln_mlp",
    "ln_2",
    "post_attention_layernorm",
    "final_layer_norm",
    "ffn_norm",
    "norm2",
)
MLP_NAMES = ("mlp", "feed_forward", "ffn")
FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f")
POSITION_NAMES = ("wpe", "embed_positions", "position_embeddings")


def _child(mod: nn.Module, names) -> tuple[str, nn.Module] | tuple[None, None]:
    for n in names:
        c = getattr(mod, n, None)
        if isinstance(c, nn.Module):
            return n, c
    return None, None


def _config_int(c, *names):
    for n in names:
        v = getattr(c, n, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _calls(module: nn.Module, text: str) -> bool:
    """Whether the source of ``module``'s forward mentions ``text``."""
    try:
        return text in inspect.getsource(type(module).forward)
    except (OSError, TypeError):
        return False


class GenericAdapter(Adapter):
    """Any decoder LM whose blocks hold an attention module with Q/K/V/O projections."""

    family = "generic"
    model_types: tuple[str, ...] = ()
    fused_layout: str | None = (
        None  # a fused QKV's row order (``_split_fused``): declared per family, never guessed
    )
    rope_style = "half"  # "half": cos/sin [T, rot]; "half-dup": [T, rot/2] (GPT-OSS); "gptj": (sin, cos) [T, rot/2] interleaved
    post_norm = False  # OLMo-2: norms on the sublayers' outputs, none on their inputs
    parallel = False  # attention and MLP both read the block's input (set per family)

    def __init__(self, model: nn.Module):
        super().__init__(model)
        c = self.config
        if type(self).family in (
            "generic",
            "llama",
        ):  # classes covering several model types name the one loaded
            self.family = getattr(c, "model_type", None) or type(self).family
        self.n_layers = _config_int(c, "num_hidden_layers", "n_layer", "num_layers")
        self.body = model.base_model
        self.blocks = self._find_blocks()
        block = self.blocks[0]
        self.attn_name, attn = _child(block, ATTENTION_NAMES)
        if attn is None:
            raise SinkscopeError(
                f"{self._what()}: its blocks have no attention module sinkscope recognises "
                f"({', '.join(ATTENTION_NAMES)}); it cannot be analysed"
            )
        self.n_heads = _config_int(c, "num_attention_heads", "n_head", "num_heads")
        self.d_model = _config_int(c, "hidden_size", "n_embd", "d_model")
        self.d_head = (
            _config_int(c, "head_dim")
            or getattr(attn, "head_dim", None)
            or getattr(attn, "head_size", None)
            or self.d_model // self.n_heads
        )
        self.q_name, self.k_name, self.v_name = (
            _child(attn, n)[0] for n in (Q_NAMES, K_NAMES, V_NAMES)
        )
        self.fused_name = None if self.q_name else _child(attn, FUSED_NAMES)[0]
        self.o_name = _child(attn, OUT_NAMES)[0]
        if (
            not ((self.q_name and self.k_name and self.v_name) or self.fused_name)
            or not self.o_name
        ):
            raise SinkscopeError(
                f"{self._what()}: its attention ({type(attn).__name__}) has no Q/K/V and output "
                "projections sinkscope recognises; it cannot be analysed"
            )
        self.n_kv_heads = self._kv_heads(attn)
        self.ln1_name = None if self.post_norm else _child(block, LN1_NAMES)[0]
        self.ln2_name = None if self.post_norm else _child(block, LN2_NAMES)[0]
        if self.parallel and self.ln2_name is None:
            self.ln2_name = (
                self.ln1_name
            )  # one norm feeds attention and MLP (GPT-J, Phi, Falcon-7B)
        self.mlp_name = _child(block, MLP_NAMES)[0]

    def _what(self) -> str:
        return f"{type(self.model).__name__} (model_type {getattr(self.config, 'model_type', '?')})"

    def _find_blocks(self) -> nn.ModuleList:
        for _, mod in self.body.named_modules():
            if isinstance(mod, nn.ModuleList) and len(mod) == self.n_layers and self.n_layers:
                return mod
        raise SinkscopeError(
            f"{self._what()}: no list of {self.n_layers} blocks found; it cannot be analysed"
        )

    def _kv_heads(self, attn) -> int:
        if self.fused_name:
            fused_rows = getattr(attn, self.fused_name).weight.shape[0]
            return self._fused_kv_heads(attn, fused_rows)
        rows = getattr(attn, self.k_name).weight.shape[0]
        assert rows % self.d_head == 0, (rows, self.d_head)
        return rows // self.d_head

    def _fused_kv_heads(self, attn, rows: int) -> int:
        """``blocks`` layout ``[q (H·dh) | k (KV·dh) | v (KV·dh)]``: KV from the row count
        (other layouts: the family says; unknown ones: the config's KV heads)."""
        kv2 = rows // self.d_head - self.n_heads
        if self.fused_layout != "blocks" or kv2 <= 0 or kv2 % 2:
            return _config_int(self.config, "num_key_value_heads", "num_kv_heads") or self.n_heads
        return kv2 // 2

    def route_attention(self, stack: ExitStack) -> None:
        """Through transformers' attention interface where the attention calls it, else through
        its own ``scaled_dot_product_attention`` call (Falcon); anything else is refused."""
        from ..metrics.capture import route_interface, route_sdpa_calls

        attn = self.attention_module(0)
        if _calls(attn, "ALL_ATTENTION_FUNCTIONS"):
            route_interface(self, stack)
        elif _calls(attn, "scaled_dot_product_attention"):
            route_sdpa_calls(self, stack)
        else:
            raise SinkscopeError(
                f"{type(attn).__name__} computes attention itself, through neither transformers' attention "
                "interface nor torch's scaled_dot_product_attention, so sinkscope cannot capture its attention; "
                "use a model whose attention goes through transformers' attention interface"
            )

    # ---- structure ----------------------------------------------------------------------------
    def info(self) -> ArchInfo:
        attn = self.attention_module(0)
        bias = self._proj_bias(attn)
        norm_mod = self.ln1_module(0) or self.ln_final_module()
        norm = "rmsnorm" if "rms" in type(norm_mod).__name__.lower() else "layernorm"
        return ArchInfo(
            family=self.family,
            positional=self._positional(),
            norm=norm + ("-post" if self.post_norm else ""),
            has_query_bias=bias is not None,
            has_mlp=self.mlp_name is not None,
            qk_norm=self.q_norm_module(0) is not None,
            parallel=self.parallel,
            sink_logit=getattr(attn, "sinks", None) is not None,
        )

    def _positional(self) -> str:
        if self.position_embedding_module() is not None:
            return "learned"
        if getattr(self.config, "alibi", False) or getattr(self.config, "model_type", "") in (
            "bloom",
            "mpt",
        ):
            return "alibi"
        return "rotary" if self._rotary_module() is not None else "none"

    def _rotary_module(self):
        return getattr(self.body, "rotary_emb", None)

    def layers(self) -> list[nn.Module]:
        return list(self.blocks)

    def attention_module(self, layer: int) -> nn.Module:
        return getattr(self.blocks[layer], self.attn_name)

    def trunk(self) -> nn.Module:
        return self.body

    def attn_scale(self, layer: int) -> float:
        attn = self.attention_module(layer)
        for name in ("scaling", "inv_norm_factor"):
            v = getattr(attn, name, None)
            if isinstance(v, (int, float)):
                return float(v)
        return self.d_head**-0.5

    def ln1_module(self, layer: int) -> nn.Module | None:
        return getattr(self.blocks[layer], self.ln1_name) if self.ln1_name else None

    def ln2_module(self, layer: int) -> nn.Module | None:
        return getattr(self.blocks[layer], self.ln2_name) if self.ln2_name else None

    def ln1(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        # post-norm: no input norm
        return x if self.ln1_module(layer) is None else super().ln1(layer, x)

    def ln_final_module(self) -> nn.Module | None:
        return _child(self.body, FINAL_NORM_NAMES)[1]

    def mlp_module(self, layer: int) -> nn.Module | None:
        return getattr(self.blocks[layer], self.mlp_name) if self.mlp_name else None

    def token_embedding_module(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def position_embedding_module(self) -> nn.Embedding | None:
        mod = _child(self.body, POSITION_NAMES)[1]
        return mod if isinstance(mod, nn.Embedding) else None

    @property
    def W_pos(self) -> torch.Tensor | None:
        mod = self.position_embedding_module()
        if mod is None:
            return None
        self._need(mod.weight, what="the positional embedding")
        return mod.weight.detach()[getattr(mod, "offset", 0) :]

    def q_norm_module(self, layer: int) -> nn.Module | None:
        """The norm on queries before RoPE (QK-norm: Qwen3, Gemma, OLMo-2), or None."""
        return _child(self.attention_module(layer), ("q_norm", "q_layernorm"))[1]

    def k_norm_module(self, layer: int) -> nn.Module | None:
        return _child(self.attention_module(layer), ("k_norm", "k_layernorm"))[1]

    def kernel_qk(self, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and keys as the attention kernel sees them, from the attention's input ``x
        [batch, pos, d_model]``: projections, QK-norm, rotary. ``[batch, head, pos, d_head]``
        (keys per KV head). What the weight analyses assume; the tests check it against the model."""
        W_Q, b_Q = self.q(layer)
        W_K, b_K = self._checked(
            self._k(layer),
            (self.n_kv_heads, self.d_model, self.d_head),
            (self.n_kv_heads, self.d_head),
        )
        q = torch.einsum("bpd,hde->bphe", x, W_Q) + b_Q  # [batch, pos, head, d_head]
        k = torch.einsum("bpd,hde->bphe", x, W_K) + b_K
        q, k = (
            self._qk_norm(layer, q, self.q_norm_module(layer)),
            self._qk_norm(layer, k, self.k_norm_module(layer)),
        )
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        rope = self.rope(layer, x.shape[1], device=x.device, dtype=x.dtype)
        return (q, k) if rope is None else (rope.apply(q), rope.apply(k))

    def _qk_norm(self, layer, t, mod):
        if mod is None:
            return t
        if mod.weight.shape[-1] == t.shape[-1]:  # per head (Qwen3, Gemma)
            return mod(t)
        return mod(t.flatten(-2)).view(t.shape)  # over all heads (OLMo-2)

    # ---- rotary -------------------------------------------------------------------------------
    def rope(
        self,
        layer: int,
        T: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Rotary | None:
        emb = self._rotary_module()
        if emb is None or self._positional() != "rotary":
            return None
        device = device or self.token_embedding_module().weight.device
        x = torch.zeros(1, T, 1, device=device, dtype=dtype)  # only its dtype / device are read
        pos = torch.arange(T, device=device)[None]
        args = (x, pos)
        types = getattr(self.config, "layer_types", None)
        if types and "layer_type" in inspect.signature(emb.forward).parameters:
            args = args + (types[layer],)  # Gemma-3: sliding and full layers rotate differently
        a, b = emb(*args)
        a, b = a[0].to(dtype), b[0].to(dtype)
        if self.rope_style == "gptj":  # GPT-J returns (sin, cos), one entry per rotated pair
            return Rotary(b.repeat_interleave(2, -1), a.repeat_interleave(2, -1), interleaved=True)
        if self.rope_style == "half-dup":  # GPT-OSS: one entry per pair, halves rotate together
            return Rotary(torch.cat((a, a), -1), torch.cat((b, b), -1))
        return Rotary(a, b)

    # ---- projections --------------------------------------------------------------------------
    def _attn_lin(self, layer, name):
        return getattr(self.attention_module(layer), name)

    def _proj_bias(self, attn):
        lin = getattr(attn, self.q_name or self.fused_name)
        return lin.bias

    def _split_fused(self, t: torch.Tensor, which: int) -> torch.Tensor:
        """Rows of a fused QKV weight ``[rows, d]`` (or bias ``[rows]``) for Q (0), K (1) or V (2),
        as ``[heads, d_head, ...]``, a view of the live tensor. ``blocks``: ``[q | k | v]``."""
        if self.fused_layout != "blocks":
            raise SinkscopeError(
                f"the row layout of {self._what()}'s fused {self.fused_name} is not known to sinkscope, so its "
                "Q / K / V weights cannot be read (measure and the forward-pass analyses still work); "
                "a family entry in models/families.py declares it"
            )
        H, KV, dh = self.n_heads, self.n_kv_heads, self.d_head
        rest = t.shape[1:]
        start, n = ((0, H), (H, KV), (H + KV, KV))[which]
        return t[start * dh : (start + n) * dh].view(n, dh, *rest)

    def _fused(self, layer, which):
        lin = self._attn_lin(layer, self.fused_name)
        w, b = lin.weight, lin.bias
        if w.is_meta or (b is not None and b.is_meta):
            return w, b
        n = self.n_heads if which == 0 else self.n_kv_heads
        W = (
            self._split_fused(w, which).reshape(n, self.d_head, self.d_model).permute(0, 2, 1)
        )  # [head, d_model, d_head]
        B = None if b is None else self._split_fused(b, which).reshape(n, self.d_head)
        return W, B

    def _q(self, layer):
        if self.fused_name:
            return self._fused(layer, 0)
        return linear_qkv(self._attn_lin(layer, self.q_name), self.n_heads)

    def _k(self, layer):
        if self.fused_name:
            return self._fused(layer, 1)
        return linear_qkv(self._attn_lin(layer, self.k_name), self.n_kv_heads)

    def _v(self, layer):
        if self.fused_name:
            return self._fused(layer, 2)
        return linear_qkv(self._attn_lin(layer, self.v_name), self.n_kv_heads)

    def _o(self, layer):
        return linear_out(self._attn_lin(layer, self.o_name), self.n_heads)

    def query_bias_view(self, layer: int) -> torch.Tensor | None:
        lin = self._attn_lin(layer, self.q_name or self.fused_name)
        if lin.bias is None:
            return None
        if self.fused_name:
            view = self._split_fused(lin.bias.data, 0)
            if view.data_ptr() != lin.bias.data[: view.numel()].data_ptr() or not view._is_view():
                raise SinkscopeError(
                    f"{self.family}: its grouped fused layout interleaves the query bias with K and V, "
                    "so it cannot be edited in place; edit the model's bias directly"
                )
            return view
        return lin.bias.data.view(self.n_heads, self.d_head)

    def key_weight_view(self, layer: int) -> torch.Tensor:
        """``[d_model (input coordinate), ...]`` view of the live key weight (rows: coordinates)."""
        if self.fused_name:
            w = self._attn_lin(layer, self.fused_name).weight.data
            return self._split_fused(w, 1).permute(2, 0, 1)  # [d_model, kv_head, d_head]
        return self._attn_lin(layer, self.k_name).weight.data.T
