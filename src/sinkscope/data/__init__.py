"""Inputs: the paper protocol, prepared CSVs, text / JSONL files, HF datasets, the offline corpus."""
from .corpus import default_corpus
from .inputs import (
    PAPER_SOURCES,
    SPEC_HELP,
    Example,
    TokenizedInputs,
    effective_per_domain,
    load_inputs,
    paper_protocol,
    parse_spec,
    read_examples,
    tokenize_examples,
    truncate_text,
)

__all__ = [
    "PAPER_SOURCES",
    "SPEC_HELP",
    "Example",
    "TokenizedInputs",
    "default_corpus",
    "effective_per_domain",
    "load_inputs",
    "paper_protocol",
    "parse_spec",
    "read_examples",
    "tokenize_examples",
    "truncate_text",
]
