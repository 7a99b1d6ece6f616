"""Model loading and per-architecture adapters.

>>> from transformers import GPT2Config, GPT2LMHeadModel
>>> from sinkscope.models import adapter_for
>>> a = adapter_for(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4)))
>>> tuple(a.W_Q.shape), tuple(a.b_Q.shape), a.info().positional
((2, 4, 32, 8), (2, 4, 8), 'learned')
"""

from .._lazy import lazy_package

_EXPORTS = {
    "Adapter": "base",
    "ArchInfo": "base",
    "ADAPTERS": "loading",
    "PACKAGED": "loading",
    "SUPPORTED_MODEL_TYPES": "loading",
    "SinkModel": "loading",
    "adapter_for": "loading",
    "default_model_path": "loading",
    "load_model": "loading",
    "packaged_model_path": "loading",
}
__getattr__, __dir__, __all__ = lazy_package(__name__, globals(), _EXPORTS)
