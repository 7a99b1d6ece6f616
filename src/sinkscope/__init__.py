"""sinkscope: find, explain, break and fix attention sinks in transformer language models.

The Python API mirrors the CLI::

    import sinkscope
    model = sinkscope.load_model()                      # sinkscope measure (default model)
    inputs = sinkscope.load_inputs("default", model.tokenizer)
    result = sinkscope.measure(model, inputs)           # per example x layer x head metrics
    result.summary()["bos_attention"]["all"]            # {"mean", "se", "ci_low", "ci_high", "n"}
"""
from .data import load_inputs
from .errors import MissingTensorsError, SinkscopeError
from .experiments import MeasureResult, measure
from .models import SinkModel, adapter_for, load_model

__version__ = "0.1.0"

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
