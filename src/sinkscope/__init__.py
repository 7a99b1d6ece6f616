"""sinkscope: find, explain, break and fix attention sinks in transformer language models.

The Python API mirrors the CLI::

    import sinkscope
    model = sinkscope.load_model()                      # sinkscope measure (default model)
    inputs = sinkscope.load_inputs("default", model)    # the CLI's BOS rule for this model
    result = sinkscope.measure(model, inputs)           # per example x layer x head metrics
    result.summary()["bos_attention"]["all"]            # {"mean", "se", "ci_low", "ci_high", "n"}
"""
from ._lazy import lazy_package
from .errors import MissingTensorsError, SinkscopeError

__version__ = "0.1.0"

# torch and transformers load on first use (PEP 562), so ``import sinkscope.cli`` stays light
_EXPORTS = {"load_inputs": "data.inputs", "MeasureResult": "stages.measure", "measure": "stages.measure",
            "SinkModel": "models.loading", "adapter_for": "models.loading", "load_model": "models.loading"}
__getattr__, __dir__ = lazy_package(__name__, globals(), _EXPORTS)[:2]  # __all__ below adds the eager names

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
