"""Model loading and per-architecture adapters.

>>> from transformers import GPT2Config, GPT2LMHeadModel
>>> from sinkscope.models import adapter_for
>>> a = adapter_for(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4)))
>>> tuple(a.W_Q.shape), tuple(a.b_Q.shape), a.info().positional
((2, 4, 32, 8), (2, 4, 8), 'learned')
"""
from .base import Adapter, ArchInfo
from .loading import ADAPTERS, PACKAGED, SUPPORTED_MODEL_TYPES, SinkModel, adapter_for, default_model_path, load_model, packaged_model_path

__all__ = [
    "ADAPTERS",
    "Adapter",
    "ArchInfo",
    "PACKAGED",
    "SUPPORTED_MODEL_TYPES",
    "SinkModel",
    "adapter_for",
    "default_model_path",
    "load_model",
    "packaged_model_path",
]
