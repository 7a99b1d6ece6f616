"""SinkGPT: GPT-2 with each sink-circuit component behind a switch (what ``sinkscope train`` trains).

Module and parameter names are GPT-2's (``transformer.h[l].attn.c_attn`` ...), so with every switch
at its GPT-2 setting the state dict *is* a ``GPT2LMHeadModel`` state dict and is saved as one
(``model_type: gpt2``). Other variants are saved as ``model_type: sinkscope_gpt``, which
``import sinkscope`` registers with ``AutoConfig`` / ``AutoModelForCausalLM``.

Switches (:class:`SinkGPTConfig`):

* ``query_bias``: False keeps the query third of ``c_attn.bias`` at exactly 0 (masked in the forward
  pass, so it gets no gradient and weight decay cannot move it);
* ``positions``: ``learned`` (``wpe``), ``rotary`` (GPT-NeoX rotate-half RoPE on q, k after the bias)
  or ``none`` (no positional parameters at all; causal masking is the only order signal);
* ``mlp``: False drops ``ln_2`` and the MLP from every block;
* ``normaliser``: ``softmax``; ``off_by_one`` (an extra logit fixed at 0 with a zero value:
  ``exp(s_j) / (1 + Σ exp(s))``); ``sink_logit`` (the same with a learned per-head logit, as in
  GPT-OSS); ``gated`` (softmax, then the head output times ``sigmoid(x W_g + b_g)``, Qiu et al. 2025).

The extra logit is passed to the attention function as ``s_aux`` (GPT-OSS's name), so sinkscope's
capture measures these models exactly: ``A[i, j] = exp(s_ij - logaddexp(lse_i, s_aux))``.

>>> import torch
>>> cfg = SinkGPTConfig(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=4, positions="rotary")
>>> m = SinkGPTForCausalLM(cfg).eval()
>>> m(torch.zeros(1, 5, dtype=torch.long)).logits.shape
torch.Size([1, 5, 64])
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PretrainedConfig, PreTrainedModel
from transformers.activations import NewGELUActivation
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput
from transformers.pytorch_utils import Conv1D

from .rotary import apply_rope, rope_cos_sin, rotate_half  # noqa: F401  (re-exported)
from .switches import NORMALISERS, POSITIONS  # noqa: E402  (re-exported: the model's own switches)

if TYPE_CHECKING:
    from typing import Any

    from torch import Tensor
    from transformers import GPT2Config

    CosSin = tuple[Tensor, Tensor]  # rotary cos, sin [T, d_head]


class SinkGPTConfig(PretrainedConfig):
    model_type = "sinkscope_gpt"
    attribute_map = {
        "hidden_size": "n_embd",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
        "max_position_embeddings": "n_positions",
    }

    def __init__(
        self,
        vocab_size: int = 4096,
        n_positions: int = 128,
        n_embd: int = 128,
        n_layer: int = 4,
        n_head: int = 4,
        layer_norm_epsilon: float = 1e-5,
        initializer_range: float = 0.02,
        query_bias: bool = True,
        positions: str = "learned",
        mlp: bool = True,
        normaliser: str = "softmax",
        rope_theta: float = 10000.0,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        **kwargs,
    ):
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
        if normaliser not in NORMALISERS:
            raise ValueError(f"normaliser must be one of {NORMALISERS}, got {normaliser!r}")
        if n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head})")
        self.vocab_size, self.n_positions, self.n_embd = vocab_size, n_positions, n_embd
        self.n_layer, self.n_head = n_layer, n_head
        self.layer_norm_epsilon, self.initializer_range = layer_norm_epsilon, initializer_range
        self.query_bias, self.positions, self.mlp = query_bias, positions, mlp
        self.normaliser, self.rope_theta = normaliser, rope_theta
        self.bos_token_id, self.eos_token_id = bos_token_id, eos_token_id
        kwargs.setdefault("tie_word_embeddings", True)
        super().__init__(**kwargs)

    @property
    def is_gpt2(self) -> bool:
        """True when every switch is at GPT-2's setting (the checkpoint is a plain GPT-2)."""
        return (
            self.query_bias
            and self.positions == "learned"
            and self.mlp
            and self.normaliser == "softmax"
        )

    def to_gpt2_config(self) -> GPT2Config:
        from transformers import GPT2Config

        return GPT2Config(
            vocab_size=self.vocab_size,
            n_positions=self.n_positions,
            n_embd=self.n_embd,
            n_layer=self.n_layer,
            n_head=self.n_head,
            layer_norm_epsilon=self.layer_norm_epsilon,
            initializer_range=self.initializer_range,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
            activation_function="gelu_new",
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )


def attention_with_aux(
    q: Tensor, k: Tensor, v: Tensor, keep: Tensor | None, scale: float, s_aux: Tensor | None
) -> Tensor:
    """``softmax([scale·qkᵀ | s_aux])`` without the extra column, times ``v``.

    q, k, v ``[B, H, T, D]``; ``keep`` bool ``[B|1, 1, T, T]`` (True = attend) or None for causal;
    ``s_aux [H]`` or None (plain softmax through the fused SDPA kernel).
    """
    T, S = q.shape[2], k.shape[2]
    if s_aux is None:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=keep, is_causal=keep is None and T > 1, scale=scale
        )
    if keep is None:
        keep = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)[None, None]
    s = (q @ k.transpose(-1, -2)) * scale  # [batch, head, q_pos, k_pos]
    s = s.masked_fill(~keep, float("-inf"))
    aux = s_aux.to(s.dtype).view(1, -1, 1, 1).expand(s.shape[0], -1, T, 1)
    p = torch.softmax(torch.cat([s, aux], dim=-1), dim=-1)[..., :S]
    return p @ v


class SinkGPTAttention(nn.Module):
    def __init__(self, config: SinkGPTConfig, layer_idx: int):
        super().__init__()
        self.config = config
        d, H = config.n_embd, config.n_head
        self.n_head, self.d_head, self.layer_idx = H, d // H, layer_idx
        self.scaling = self.d_head**-0.5
        self.is_causal = True
        self.c_attn = Conv1D(3 * d, d)  # [d, 3d]: Q | K | V
        self.c_proj = Conv1D(d, d)
        if config.normaliser == "gated":
            self.gate = Conv1D(d, d)  # head-specific elementwise output gate
        if config.normaliser == "sink_logit":
            self.sinks = nn.Parameter(torch.zeros(H))

    def s_aux(self) -> torch.Tensor | None:
        """The extra per-head logit of the normaliser (None for plain softmax)."""
        if self.config.normaliser == "off_by_one":
            return torch.zeros(
                self.n_head, dtype=self.c_attn.weight.dtype, device=self.c_attn.weight.device
            )
        if self.config.normaliser == "sink_logit":
            return self.sinks
        return None

    def forward(
        self,
        hidden_states: Tensor,
        rope: CosSin | None = None,
        keep: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        B, T, d = hidden_states.shape
        bias = self.c_attn.bias
        # the query third is held at exactly 0 (and so gets no gradient)
        if not self.config.query_bias:
            bias = torch.cat([torch.zeros_like(bias[:d]), bias[d:]])
        qkv = torch.addmm(bias, hidden_states.reshape(-1, d), self.c_attn.weight).view(
            B, T, 3, self.n_head, self.d_head
        )
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [batch, head, pos, d_head]
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        impl = self.config._attn_implementation
        if impl in (None, "eager", "sdpa"):
            # [batch, head, pos, d_head]
            out = attention_with_aux(q, k, v, keep, self.scaling, self.s_aux())
            out = out.transpose(1, 2)
        else:  # a registered attention function (e.g. sinkscope's capture) returns [batch, pos, head, d_head]
            from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

            mask = None if keep is None else keep.expand(B, 1, T, T)
            out, _ = ALL_ATTENTION_FUNCTIONS[impl](
                self, q, k, v, mask, scaling=self.scaling, dropout=0.0, s_aux=self.s_aux()
            )
        out = out.reshape(B, T, d)
        if self.config.normaliser == "gated":
            out = out * torch.sigmoid(self.gate(hidden_states))
        return self.c_proj(out)


class SinkGPTMLP(nn.Module):
    def __init__(self, config: SinkGPTConfig):
        super().__init__()
        self.c_fc = Conv1D(4 * config.n_embd, config.n_embd)
        self.c_proj = Conv1D(config.n_embd, 4 * config.n_embd)
        self.act = NewGELUActivation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class SinkGPTBlock(nn.Module):
    def __init__(self, config: SinkGPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = SinkGPTAttention(config, layer_idx)
        if config.mlp:
            self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
            self.mlp = SinkGPTMLP(config)

    def forward(
        self, hidden_states: Tensor, rope: CosSin | None = None, keep: Tensor | None = None
    ) -> Tensor:
        x = hidden_states + self.attn(self.ln_1(hidden_states), rope=rope, keep=keep)
        if hasattr(self, "mlp"):
            x = x + self.mlp(self.ln_2(x))
        return x


class SinkGPTPreTrainedModel(PreTrainedModel):
    config_class = SinkGPTConfig
    config: SinkGPTConfig
    base_model_prefix = "transformer"
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["SinkGPTBlock"]

    def _init_weights(self, module):
        std = self.config.initializer_range
        with torch.no_grad():
            if isinstance(module, Conv1D):
                module.weight.normal_(0.0, std)
                module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, std)
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
            if isinstance(module, (SinkGPTAttention, SinkGPTMLP)):  # GPT-2's residual-path scaling
                module.c_proj.weight.normal_(0.0, std / math.sqrt(2 * self.config.n_layer))
            if isinstance(module, SinkGPTAttention) and hasattr(module, "sinks"):
                module.sinks.zero_()


class SinkGPTModel(SinkGPTPreTrainedModel):
    def __init__(self, config: SinkGPTConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        if config.positions == "learned":
            self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.h = nn.ModuleList(SinkGPTBlock(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        **kwargs: Any,
    ) -> BaseModelOutput:
        x = self.wte(input_ids) if inputs_embeds is None else inputs_embeds  # [batch, pos, d_model]
        B, T = x.shape[:2]
        if T > self.config.n_positions:
            raise ValueError(
                f"sequence of {T} tokens is longer than the model's context ({self.config.n_positions})"
            )
        if self.config.positions == "learned":
            x = x + self.wpe(torch.arange(T, device=x.device))
        rope = (
            rope_cos_sin(
                T,
                self.config.n_embd // self.config.n_head,
                self.config.rope_theta,
                x.device,
                x.dtype,
            )
            if self.config.positions == "rotary"
            else None
        )
        keep = None
        if attention_mask is not None and not bool(attention_mask.all()):
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            # [batch, 1, q_pos, k_pos]; padded queries see themselves: no NaN rows
            keep = causal[None, None] & attention_mask.bool()[:, None, None, :]
            keep = keep | torch.eye(T, dtype=torch.bool, device=x.device)
        hidden = [x] if output_hidden_states else None
        for block in self.h:
            x = block(x, rope=rope, keep=keep)
            if hidden is not None:
                hidden.append(x)
        x = self.ln_f(x)
        if hidden is not None:
            hidden[-1] = x
        return BaseModelOutput(
            last_hidden_state=x, hidden_states=tuple(hidden) if hidden is not None else None
        )


class SinkGPTForCausalLM(SinkGPTPreTrainedModel):
    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: SinkGPTConfig):
        super().__init__(config)
        self.transformer = SinkGPTModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        **kwargs: Any,
    ) -> CausalLMOutput:
        out = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
        )
        logits = self.lm_head(out.last_hidden_state)  # [batch, pos, vocab]
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels[:, 1:].reshape(-1),
                ignore_index=-100,
            )
        return CausalLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


def register() -> None:
    """Make ``AutoConfig`` / ``AutoModelForCausalLM`` load ``model_type: sinkscope_gpt`` directories."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        AutoConfig.register(SinkGPTConfig.model_type, SinkGPTConfig)
        AutoModelForCausalLM.register(SinkGPTConfig, SinkGPTForCausalLM)
    except ValueError:  # already registered
        pass


register()


def __getattr__(name: str):
    """``SinkGPTAdapter`` (moved to :mod:`.sinkgpt_adapter`), importable from here as before.
    Imported on first use: the adapter module imports this one, so a top-level import would be
    a cycle."""
    if name == "SinkGPTAdapter":
        from .sinkgpt_adapter import SinkGPTAdapter

        return SinkGPTAdapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
