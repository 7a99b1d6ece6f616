"""Training small GPT-2-style models with sink-circuit components switched off (``sinkscope train``)."""

from .._lazy import lazy_package

_EXPORTS = {
    "TrainConfig": "config",
    "export": "recipe",
    "fit_tokenizer": "data",
    "probe_sink": "recipe",
    "read_tokenizer": "data",
    "sample_windows": "data",
    "token_streams": "data",
    "train": "recipe",
    "training_texts": "data",
}
__getattr__, __dir__, __all__ = lazy_package(__name__, globals(), _EXPORTS)
