"""The ``--inputs`` spec: its kinds and arguments, importable without torch (the CLI's help).

>>> parse_spec("jsonl:data/x.jsonl:text")
('jsonl', ['data/x.jsonl', 'text'])
>>> parse_spec("hf:openai/gsm8k:main:train:question")
('hf', ['openai/gsm8k', 'main', 'train', 'question'])
"""

from __future__ import annotations

from typing import Sequence

from ..errors import SinkscopeError

SPEC_KINDS = ("default", "paper", "paper-offline", "paper-csv", "text", "jsonl", "hf")
SPEC_HELP = "default | paper | paper-offline | paper-csv:PATH | text:PATH | jsonl:PATH:FIELD | hf:DATASET[:CONFIG]:SPLIT:FIELD"

# The study's three sources (paper-notes: Protocol): name, hub path, config, split, field.
PAPER_SOURCES = (
    ("sst2", "stanfordnlp/sst2", None, "train", "sentence"),
    ("gsm8k", "openai/gsm8k", "main", "train", "question"),
    ("humaneval", "openai/openai_humaneval", None, "test", "prompt"),
)


def parse_spec(spec: str) -> tuple[str, list[str]]:
    """Split an ``--inputs`` spec into its kind and arguments (Windows drive letters are not supported)."""
    kind, _, rest = spec.partition(":")
    if kind not in SPEC_KINDS:
        raise SinkscopeError(f"unknown --inputs '{spec}'; expected {SPEC_HELP}")
    args = rest.split(":") if rest else []
    want = {
        "default": (0, 0),
        "paper": (0, 0),
        "paper-offline": (0, 0),
        "paper-csv": (1, 1),
        "text": (1, 1),
        "jsonl": (2, 2),
        "hf": (3, 4),
    }[kind]
    if kind == "jsonl" and len(args) > 2:  # allow ':' in the path, field is the last part
        args = [":".join(args[:-1]), args[-1]]
    if not want[0] <= len(args) <= want[1]:
        raise SinkscopeError(f"malformed --inputs '{spec}'; expected {SPEC_HELP}")
    return kind, args


def effective_per_domain(spec: str, per_domain: int | None) -> int | None:
    """``--per-domain`` as given, else 100 for the generated sets (``default``, ``paper``), else all."""
    if per_domain is not None:
        return per_domain
    return 100 if parse_spec(spec)[0] in ("default", "paper") else None


CONTENTS = ("natural", "random", "repeated")


def check_contents(contents: Sequence[str]) -> list[str]:
    """``--content`` values, checked: a non-empty subset of :data:`CONTENTS`, each once."""
    out = [c.strip() for c in contents if c.strip()]
    bad = [c for c in out if c not in CONTENTS]
    if bad or not out:
        raise SinkscopeError(
            f"--content {','.join(contents)}: use a comma-separated subset of {', '.join(CONTENTS)}"
        )
    if len(set(out)) < len(out):
        raise SinkscopeError(f"--content {','.join(out)} names a regime twice; give each once")
    return out
