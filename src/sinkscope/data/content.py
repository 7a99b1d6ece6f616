"""The study's content regimes and lengths: natural text at any length, uniform random tokens,
and a random sequence repeated (Gu et al. use the same three).

- ``natural``: the ``--inputs`` texts; where a text is shorter than the length asked for,
  consecutive texts of the same domain are joined (``"\\n\\n"``) until it is long enough.
- ``random``: token ids uniform over the vocabulary minus the special tokens.
- ``repeated``: a random sequence of half the length, followed by itself.

A ``seed`` resamples every regime; seed 0 is the inputs' own selection (the paper's).

>>> from sinkscope.data.tokenizers import offline_gpt2_tokenizer
>>> tok = offline_gpt2_tokenizer()
>>> ti = synthetic_inputs("repeated", tok, n=2, length=8, seed=1, vocab=100)
>>> ti.ids.shape, bool((ti.ids[:, :4] == ti.ids[:, 4:]).all()), ti.domains
(torch.Size([2, 8]), True, ['repeated', 'repeated'])
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import TYPE_CHECKING

import torch

from ..errors import SinkscopeError
from .inputs import Example, TokenizedInputs

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

from .spec import CONTENTS, check_contents  # noqa: E402,F401  (torch-free: checked before torch)


def lengthen(
    examples: list[Example], tokenizer: PreTrainedTokenizerBase, n_tokens: int
) -> list[Example]:
    """Texts of at least ``n_tokens`` tokens: each text long enough is kept; shorter ones are
    joined, in order, with the following texts of their domain until the join is long enough."""
    counts = (
        tokenizer([e.text for e in examples], add_special_tokens=False)["input_ids"]
        if examples
        else []
    )
    out, pending = [], defaultdict(list)  # domain -> [(example, n tokens)] waiting to be joined
    for e, ids in zip(examples, counts):
        if not pending[e.domain] and len(ids) >= n_tokens:
            out.append(e)
            continue
        pending[e.domain].append((e, len(ids)))
        if sum(n for _, n in pending[e.domain]) >= n_tokens:
            parts = [p for p, _ in pending.pop(e.domain)]
            out.append(
                Example(
                    text="\n\n".join(p.text for p in parts),
                    domain=e.domain,
                    source=parts[0].source,
                    meta={"joined": len(parts)},
                )
            )
    return out


def resample(examples: list[Example], seed: int) -> list[Example]:
    """The examples shuffled within each domain by ``seed`` (0: unchanged, the inputs' own order,
    so that tokenising keeps the paper's selection)."""
    if seed == 0:
        return list(examples)
    rng = random.Random(f"sinkscope-resample-{seed}")
    by_domain: dict[str, list[Example]] = defaultdict(list)
    for e in examples:
        by_domain[e.domain].append(e)
    out = []
    for d, es in by_domain.items():
        es = list(es)
        rng.shuffle(es)
        out += es
    return out


def allowed_ids(tokenizer: PreTrainedTokenizerBase, vocab: int) -> torch.Tensor:
    """Token ids below ``vocab`` that are not special tokens (what ``random`` draws from)."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids = torch.tensor([i for i in range(vocab) if i not in special])
    if ids.numel() == 0:
        raise SinkscopeError("the vocabulary has no non-special tokens to draw random inputs from")
    return ids


def synthetic_inputs(
    content: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    n: int,
    length: int,
    seed: int,
    vocab: int,
    bos: bool = False,
) -> TokenizedInputs:
    """``n`` inputs of exactly ``length`` tokens in regime ``random`` or ``repeated`` (domain =
    the regime), drawn with ``torch.Generator().manual_seed(seed)``; with ``bos`` index 0 is the
    tokenizer's BOS token and the draw fills the rest."""
    if content not in ("random", "repeated"):
        raise SinkscopeError(f"content {content!r} is not synthetic; use random or repeated")
    n_text = length - 1 if bos else length
    if n_text < 2 or n < 1:
        raise SinkscopeError(
            f"--lengths {length} is too short for {content} inputs; use at least {3 if bos else 2}"
        )
    pool = allowed_ids(tokenizer, vocab)
    g = torch.Generator().manual_seed(int(seed))
    if content == "random":
        body = pool[torch.randint(len(pool), (n, n_text), generator=g)]
    else:
        half = pool[torch.randint(len(pool), (n, (n_text + 1) // 2), generator=g)]
        body = torch.cat([half, half], dim=1)[:, :n_text]
    if bos:
        if tokenizer.bos_token_id is None:
            raise SinkscopeError("the tokenizer has no BOS token; use --bos off")
        body = torch.cat([torch.full((n, 1), tokenizer.bos_token_id), body], dim=1)
    examples = [
        Example(text=tokenizer.decode(row.tolist()), domain=content, source=f"{content}:seed{seed}")
        for row in body
    ]
    return TokenizedInputs(
        ids=body.long(), examples=examples, skipped={}, spec=f"{content}:seed={seed}", bos=bos
    )
