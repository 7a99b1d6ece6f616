"""Input texts: the ``--inputs`` spec, readers, and the paper's fixed-length tokenisation.

Specs: ``default`` (offline corpus), ``paper-csv:PATH``, ``text:PATH`` (one text per non-blank
line), ``jsonl:PATH:FIELD``, ``hf:DATASET[:CONFIG]:SPLIT:FIELD`` and ``paper`` (the study's
protocol from the HF hub: SST-2 / GSM8K / HumanEval).

The spec itself (kinds, parsing) lives in :mod:`sinkscope.data.spec`.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..errors import SinkscopeError
from .readers import (  # noqa: F401  (re-exported: the readers of each spec kind)
    PAPER_OFFLINE,
    Example,
    paper_offline,
    paper_protocol,
    read_examples,
    read_hf,
    read_jsonl,
    read_paper_csv,
    read_text,
    truncate_text,
)
from .spec import PAPER_SOURCES, SPEC_HELP, SPEC_KINDS, effective_per_domain, parse_spec  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    import os

    from transformers import PreTrainedTokenizerBase

    from ..models.loading import SinkModel

MIN_KEEP = 4  # shortest text kept with keep_short (its second half must hold a query)


@dataclass
class TokenizedInputs:
    """Token ids ``[n, T]`` with their examples; ``skipped`` counts short texts per domain.

    All rows have exactly ``T`` tokens unless short texts were kept (``keep_short``): those are
    right-padded and ``lengths`` gives each row's real length (padding after the text cannot
    change a causal model's computation on the text).
    """

    ids: torch.Tensor  # [example, pos]
    examples: list[Example]
    skipped: dict[str, int]
    spec: str = ""
    lengths: torch.Tensor | None = None  # [example]; None = every row is full length
    bos: bool = False  # index 0 is the tokenizer's BOS token, prepended before the text

    def __post_init__(self):
        if self.lengths is None:
            self.lengths = torch.full((self.ids.shape[0],), self.ids.shape[1], dtype=torch.long)

    @property
    def token_ids_sha256(self) -> str:
        """SHA-256 of the ``[example, pos]`` int64 ids: two runs with the same hash saw the same tokens."""
        return hashlib.sha256(self.ids.to(torch.int64).numpy().tobytes()).hexdigest()

    def record(self) -> dict:
        """What every output says about its inputs (``summary.json``'s ``inputs``)."""
        return {
            "spec": self.spec,
            "bos": self.bos,
            "n": len(self),
            "seq_len": int(self.ids.shape[1]),
            "token_ids_sha256": self.token_ids_sha256,
        }

    def write_jsonl(self, path: str | os.PathLike[str]) -> None:
        """``inputs.jsonl``: one line per example (``example, domain, text, token_ids``), so that
        every number in an output can be traced to its text and the exact tokens the model saw."""
        lines = [
            json.dumps(
                {
                    "example": i,
                    "domain": e.domain,
                    "text": e.text,
                    "token_ids": self.ids[i, : int(n)].tolist(),
                },
                ensure_ascii=False,
            )
            for i, (e, n) in enumerate(zip(self.examples, self.lengths))
        ]
        Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")

    @property
    def ragged(self) -> bool:
        return bool((self.lengths != self.ids.shape[1]).any())

    @property
    def domains(self) -> list[str]:
        return [e.domain for e in self.examples]

    def domain_masks(self) -> dict[str, np.ndarray]:
        """``{"all": all True, <domain>: mask, ...}`` in first-seen domain order."""
        d = np.asarray(self.domains)
        return {"all": np.ones(len(d), bool)} | {
            name: d == name for name in dict.fromkeys(self.domains)
        }

    def __len__(self) -> int:
        return len(self.examples)


def tokenize_examples(
    examples: Sequence[Example],
    tokenizer: PreTrainedTokenizerBase | None,
    max_tokens: int = 40,
    per_domain: int | None = None,
    prepend_bos: bool = False,
    spec: str = "",
    keep_short: bool = False,
) -> TokenizedInputs:
    """Exactly ``max_tokens`` ids per example (decode-and-re-encode truncation, as the paper).

    Texts with fewer tokens are skipped and counted per domain (none left is an error), or with
    ``keep_short`` kept at their own length (at least :data:`MIN_KEEP` tokens), right-padded.
    No special token is added unless ``prepend_bos`` (then BOS is index 0 and the text follows).
    """
    if tokenizer is None:
        raise SinkscopeError(
            "this model has no tokenizer (a partial checkpoint, a model directory without "
            "tokenizer.json / vocab.json + merges.txt / tokenizer.model, or a model in memory "
            "loaded without one); save its tokenizer into the directory, pass "
            "sinkscope.load_model(model, tokenizer=...), or load a complete model to measure"
        )
    if any(e.domain == "all" for e in examples):
        raise SinkscopeError(
            f"--inputs {spec or '?'} has a domain named 'all', the name of the aggregate over every input; rename that domain"
        )
    if not examples:
        raise SinkscopeError(f"--inputs {spec or '?'} produced no texts; check the file or dataset")
    if max_tokens < 2:
        raise SinkscopeError(f"--max-tokens {max_tokens} is too small; use at least 2")
    n_text = max_tokens - 1 if prepend_bos else max_tokens
    bos = None
    if prepend_bos:
        bos = tokenizer.bos_token_id
        if bos is None:
            raise SinkscopeError("the tokenizer has no BOS token; drop --bos")
    first = (
        tokenizer([e.text for e in examples], add_special_tokens=False)["input_ids"]
        if examples
        else []
    )
    cut_texts = [tokenizer.decode(ids[:n_text]) if len(ids) >= n_text else None for ids in first]
    keep_idx = [i for i, t in enumerate(cut_texts) if t is not None]
    second = (
        tokenizer([cut_texts[i] for i in keep_idx], add_special_tokens=False)["input_ids"]
        if keep_idx
        else []
    )
    rows, kept, skipped, taken = [], [], Counter(), Counter()
    reenc = dict(zip(keep_idx, second))
    if keep_short:  # short texts are used whole
        reenc.update(
            {i: ids for i, ids in enumerate(first) if i not in reenc and len(ids) >= MIN_KEEP}
        )
    for i, e in enumerate(examples):
        ids = reenc.get(i)
        if ids is None or len(ids) < (MIN_KEEP if keep_short else n_text):
            skipped[e.domain] += 1
            continue
        if per_domain is not None and taken[e.domain] >= per_domain:
            continue
        taken[e.domain] += 1
        rows.append(([bos] if prepend_bos else []) + list(ids[:n_text]))
        kept.append(e)
    if not rows:
        total = sum(skipped.values())
        raise SinkscopeError(
            f"none of the {total} texts has {n_text} tokens; lower --max-tokens or give longer texts"
        )
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    pad = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
    ids = torch.full((len(rows), int(lengths.max())), pad, dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, : len(r)] = torch.tensor(r)
    return TokenizedInputs(
        ids=ids, examples=kept, skipped=dict(skipped), spec=spec, lengths=lengths, bos=prepend_bos
    )


def resolve_bos(
    model: SinkModel | PreTrainedTokenizerBase | None, bos: str | bool = "auto"
) -> bool:
    """Whether to prepend the tokenizer's BOS token: ``"on"`` / ``"off"`` (or a bool) as given;
    ``"auto"`` follows the model's convention (:attr:`SinkModel.wants_bos`: models sinkscope
    trained with a BOS first token get one; a bare tokenizer or any other model gets none, as in
    the paper). The CLI's ``--bos`` and :func:`load_inputs` both decide here."""
    if isinstance(bos, bool):
        return bos
    if bos not in ("auto", "on", "off"):
        raise SinkscopeError(f"bos={bos!r}: use auto, on or off")
    return bool(getattr(model, "wants_bos", False)) if bos == "auto" else bos == "on"


def load_inputs(
    spec: str = "default",
    model: SinkModel | PreTrainedTokenizerBase | None = None,
    *,
    max_tokens: int = 40,
    per_domain: int | None = None,
    bos: str | bool = "auto",
    seed: int = 0,
    keep_short: bool = False,
    prepend_bos: bool | None = None,
) -> TokenizedInputs:
    """Read and tokenise an ``--inputs`` spec: the Python twin of ``sinkscope measure --inputs``.

    ``model`` is a :class:`SinkModel` (its tokenizer and BOS convention are used, exactly as the
    CLI does) or a bare tokenizer. ``bos`` is the CLI's ``--bos``; ``prepend_bos`` (a bool)
    overrides it."""
    tokenizer = model.tokenizer if hasattr(model, "adapter") else model
    prepend = resolve_bos(model, bos if prepend_bos is None else prepend_bos)
    per_domain = effective_per_domain(spec, per_domain)
    examples = read_examples(
        spec, tokenizer=tokenizer, per_domain=per_domain, max_tokens=max_tokens, seed=seed
    )
    return tokenize_examples(
        examples,
        tokenizer,
        max_tokens=max_tokens,
        per_domain=per_domain,
        prepend_bos=prepend,
        spec=spec,
        keep_short=keep_short,
    )
