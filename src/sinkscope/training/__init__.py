"""Training small GPT-2-style models with sink-circuit components switched off (``sinkscope train``)."""
from .data import fit_tokenizer, sample_windows, token_streams, training_texts
from .recipe import TrainConfig, export, probe_sink, train

__all__ = ["TrainConfig", "export", "fit_tokenizer", "probe_sink", "sample_windows", "token_streams", "train", "training_texts"]
