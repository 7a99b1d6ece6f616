"""sinkscope: find, explain, break and fix attention sinks in transformer language models.

The Python API mirrors the CLI::

    import sinkscope
    model = sinkscope.load_model()                      # sinkscope measure (default model)
    inputs = sinkscope.load_inputs("default", model.tokenizer)
    result = sinkscope.measure(model, inputs)           # per example x layer x head metrics
    result.summary()["bos_attention"]["all"]            # {"mean", "se", "ci_low", "ci_high", "n"}
"""
from .errors import MissingTensorsError, SinkscopeError

__version__ = "0.1.0"

# torch and transformers load on first use (PEP 562), so ``import sinkscope.cli`` stays light
_LAZY = {"load_inputs": "data", "MeasureResult": "experiments", "measure": "experiments",
         "SinkModel": "models", "adapter_for": "models", "load_model": "models"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'sinkscope' has no attribute {name!r}")

__all__ = [
    "MeasureResult",
    "MissingTensorsError",
    "SinkModel",
    "SinkscopeError",
    "adapter_for",
    "load_inputs",
    "load_model",
    "measure",
]
