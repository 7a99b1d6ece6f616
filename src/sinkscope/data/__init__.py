"""Inputs: the paper protocol, prepared CSVs, text / JSONL files, HF datasets, the offline corpus."""

from .._lazy import lazy_package

_EXPORTS = {
    "PAPER_SOURCES": "spec",
    "SPEC_HELP": "spec",
    "Example": "inputs",
    "TokenizedInputs": "inputs",
    "default_corpus": "corpus",
    "effective_per_domain": "spec",
    "load_inputs": "inputs",
    "paper_protocol": "inputs",
    "parse_spec": "spec",
    "read_examples": "readers",
    "resolve_bos": "inputs",
    "tokenize_examples": "inputs",
    "truncate_text": "inputs",
}
__getattr__, __dir__, __all__ = lazy_package(__name__, globals(), _EXPORTS)
