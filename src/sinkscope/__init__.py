"""sinkscope: find, explain, break and fix attention sinks in transformer language models.

The Python API mirrors the CLI (``docs/api.md``)::

    import sinkscope
    model = sinkscope.load_model(hf_model, tokenizer=tok)   # or a spec: "default", "gpt2", a path
    inputs = sinkscope.load_inputs("default", model)         # the CLI's BOS rule for this model
    result = sinkscope.intervene(model, inputs, preset="paper")
    result.frames()["table1"]                                # = intervene's table1.csv
    sinkscope.run("measure", model, inputs, keys=(0, 1))     # any registered stage, plugins too
"""

from __future__ import annotations

from ._lazy import lazy_package
from .errors import MissingTensorsError, SinkscopeError

__version__ = "0.1.0"

# torch and transformers load on first use (PEP 562), so ``import sinkscope.cli`` stays light
_EXPORTS = {
    "load_inputs": "data.inputs",
    "MeasureResult": "stages.measure",
    "SinkModel": "models.loading",
    "adapter_for": "models.loading",
    "load_model": "models.loading",
    "register_stage": "registry",
    "Stage": "registry",
    "option": "registry",
    **dict.fromkeys(
        ("run", "measure", "explain", "intervene", "compare", "mitigate", "shared_query"), "api"
    ),
}
__getattr__, __dir__ = lazy_package(__name__, globals(), _EXPORTS)[
    :2
]  # __all__ below adds the eager names

__all__ = sorted(["MissingTensorsError", "SinkscopeError", *_EXPORTS])
