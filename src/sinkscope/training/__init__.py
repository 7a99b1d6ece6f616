"""Training small GPT-2-style models with sink-circuit components switched off (``sinkscope train``)."""

from .._lazy import lazy_dir, lazy_exports

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
__getattr__ = lazy_exports(__name__, _EXPORTS)
__dir__ = lazy_dir(globals(), _EXPORTS)
__all__ = sorted(_EXPORTS)
