"""Which adapter analyses which architecture: one :class:`~sinkscope.models.base.Adapter` class
per family (by HF ``model_type``), the generic adapter for any other decoder-only causal LM, and
the one error for everything else."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import SinkscopeError
from .base import Adapter
from .families import (
    FalconAdapter,
    Gemma3Adapter,
    GPTJAdapter,
    GPTNeoXAdapter,
    GptOssAdapter,
    LlamaAdapter,
    Olmo2Adapter,
    PhiAdapter,
)
from .generic import GenericAdapter
from .gpt2 import GPT2Adapter
from .gpt_neo import GPTNeoAdapter
from .opt import OPTAdapter
from .sinkgpt_adapter import SinkGPTAdapter

if TYPE_CHECKING:
    from transformers import PretrainedConfig

ADAPTERS: tuple[type[Adapter], ...] = (
    GPT2Adapter,
    LlamaAdapter,
    Gemma3Adapter,
    GPTNeoAdapter,
    OPTAdapter,
    SinkGPTAdapter,
    GPTNeoXAdapter,
    FalconAdapter,
    GPTJAdapter,
    PhiAdapter,
    Olmo2Adapter,
    GptOssAdapter,
)
# explicit families (tested against HF eager); any other decoder gets GenericAdapter
SUPPORTED_MODEL_TYPES: dict[str, type[Adapter]] = {t: a for a in ADAPTERS for t in a.model_types}
# encoder-only / encoder-decoder / multimodal wrappers: no causal attention to index 0 to measure
NOT_DECODERS = (
    "bert",
    "roberta",
    "t5",
    "bart",
    "vit",
    "clip",
    "whisper",
    "distilbert",
    "electra",
    "deberta",
)


def supported_families() -> str:
    """``family (model types)`` of every adapter.

    >>> supported_families()[:40]
    'gpt2 (gpt2); llama (llama, qwen2, mistra'
    """
    return "; ".join(f"{a.family} ({', '.join(a.model_types)})" for a in ADAPTERS)


def unsupported(mt: str | None, what: str | None = None) -> SinkscopeError:
    """The one error for an architecture without an adapter (``what``: the object, for one in
    memory), listing the supported families."""
    return SinkscopeError(
        f"unsupported architecture '{mt}'{f' ({what})' if what else ''}: not a decoder-only causal LM transformers knows; supported families "
        f"(model_type): {supported_families()}, and any other decoder-only causal LM (generic adapter)"
    )


def adapter_class(config: PretrainedConfig) -> type[Adapter]:
    """The adapter class for a HF config (before any weight is read); raises the one clear
    error for an architecture sinkscope cannot analyse."""
    mt = getattr(config, "model_type", None)
    cls = SUPPORTED_MODEL_TYPES.get(mt)
    if cls is not None:
        return cls
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    if mt in NOT_DECODERS or type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise unsupported(mt)
    return GenericAdapter


def adapter_for(model: torch.nn.Module) -> Adapter:
    """Pick the adapter for a HF model by its config."""
    return adapter_class(model.config)(model)
