"""Training text and batches for ``sinkscope train``: a byte-level BPE fitted to the corpus, one
token stream per domain (last ``val_fraction`` held out), and windows drawn deterministically from
``(seed, step)``, so a resumed run sees exactly the batches an uninterrupted one would.

>>> streams = {"a": torch.arange(1000), "b": torch.arange(1000, 2000)}
>>> x = sample_windows(streams, batch=4, T=8, seed=0, step=3, bos_id=None)
>>> y = sample_windows(streams, batch=4, T=8, seed=0, step=3, bos_id=None)
>>> tuple(x.shape), bool((x == y).all()), bool((x[:, 1:] - x[:, :-1] == 1).all())
((4, 8), True, True)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import SinkscopeError
from .config import TASKS

if TYPE_CHECKING:
    import os

    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPECIAL = "<|endoftext|>"
N_RESERVED = 64
RESERVED = tuple(
    f"<|syn{i}|>" for i in range(N_RESERVED)
)  # tokens no text produces: the synthetic domain's alphabet


def tiny_texts() -> dict[str, list[str]]:
    """A few kB of synthetic text for doctests and unit tests."""
    import random

    r = random.Random(0)
    words = (
        "the cat sat on a mat while dogs ran past quickly and birds sang softly in trees".split()
    )
    return {
        d: [" ".join(r.choice(words) for _ in range(80)) for _ in range(30)] for d in ("nl", "code")
    }


def training_texts(spec: str = "default", math_problems: int = 4000) -> dict[str, list[str]]:
    """Texts per domain: ``default`` (the offline corpus: stdlib prose, stdlib code, generated
    math), ``text:PATH`` (one domain, a document per blank-line-separated paragraph) or
    ``jsonl:PATH:FIELD``."""
    from ..data import corpus

    if spec == "default":
        return {
            "nl": list(corpus.nl_texts()),
            "math": corpus.math_texts(seed=10_000, n=math_problems),
            "code": list(corpus.code_texts()),
        }
    kind, _, rest = spec.partition(":")
    if kind == "text":  # one policy for text everywhere: UTF-8 or a one-line error (readers)
        from ..data.readers import _existing_file, read_utf8

        text = read_utf8(_existing_file(rest, "--data text"), "--data text")
        return {"text": [d.strip() for d in text.split("\n\n") if d.strip()]}
    if kind == "jsonl":
        from ..data.readers import read_jsonl

        path, _, fld = rest.rpartition(":")
        if not path or not fld:
            raise SinkscopeError(f"--data {spec}: expected jsonl:PATH:FIELD")
        return {"jsonl": [e.text for e in read_jsonl(path, fld)]}
    raise SinkscopeError(
        f"--data {spec!r} is not a data spec; use default, text:PATH or jsonl:PATH:FIELD"
    )


def fit_tokenizer(texts: dict[str, list[str]], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2's pre-tokeniser) with ``vocab_size`` tokens, ``<|endoftext|>`` = 0,
    and :data:`RESERVED` special tokens 1..64 that no text encodes to (the synthetic domain's).

    Deterministic: the same texts give the same merges.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL, *RESERVED],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    docs = [t for ts in texts.values() for t in ts]
    tok.train_from_iterator(docs, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=SPECIAL, eos_token=SPECIAL, unk_token=SPECIAL
    )


def read_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """A tokenizer to reuse (``train --tokenizer DIR``): one line naming the fix when none is there."""
    from transformers import AutoTokenizer

    from ..errors import SinkscopeError

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise SinkscopeError(
            f"--tokenizer {path}: no tokenizer there ({type(e).__name__}); pass a model or tokenizer directory"
        ) from None


def tokenizer_in(
    directory: str | os.PathLike[str],
    texts: dict[str, list[str]],
    vocab_size: int,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    save: bool = True,
    fresh: bool = False,
) -> PreTrainedTokenizerBase:
    """The tokenizer kept in ``directory``: ``tokenizer`` if given, else the one saved there
    (unless ``fresh``), else one fitted to ``texts``; with ``save``, saved there
    (:func:`save_tokenizer`) when the directory has none yet."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    if tokenizer is None:
        tokenizer = (
            AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False)
            if (directory / "tokenizer.json").exists() and not fresh
            else fit_tokenizer(texts, vocab_size)
        )
    if save:
        save_tokenizer(directory, tokenizer)
    return tokenizer


def save_tokenizer(directory: str | os.PathLike[str], tokenizer: PreTrainedTokenizerBase) -> None:
    """Save ``tokenizer`` as ``directory`` (atomically: a temp folder renamed), unless one is
    saved there already."""
    import os
    import tempfile

    from ..io import publish_mode

    directory = Path(directory)
    if (directory / "tokenizer.json").exists():
        return
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".tok-"))
    tokenizer.save_pretrained(str(tmp))
    publish_mode(tmp, directory=True)
    os.replace(tmp, directory)


def token_streams(
    texts: dict[str, list[str]], tokenizer: PreTrainedTokenizerBase, val_fraction: float = 0.05
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(train, val)``: per domain, every document's ids joined by ``<|endoftext|>`` into one
    1-D stream; the last ``val_fraction`` of the stream is held out."""
    eos = tokenizer.convert_tokens_to_ids(SPECIAL)
    train, val = {}, {}
    for domain, docs in texts.items():
        enc = tokenizer(list(docs), add_special_tokens=False)["input_ids"]
        ids = torch.tensor([t for d in enc for t in (*d, eos)], dtype=torch.long)
        if len(ids) < 400:
            raise SinkscopeError(
                f"domain {domain!r} has only {len(ids)} tokens; give at least a few thousand tokens of text"
            )
        cut = int(len(ids) * (1 - val_fraction))
        train[domain], val[domain] = ids[:cut], ids[cut:]
    return train, val


def sample_windows(
    streams: dict[str, torch.Tensor],
    batch: int,
    T: int,
    seed: int,
    step: int,
    bos_id: int | None,
    weights: dict[str, float] | None = None,
) -> torch.Tensor:
    """``[batch, T]`` windows: a domain (uniformly, or by ``weights``), then a uniform start in
    its stream. With ``bos_id`` every window starts with that token followed by ``T - 1`` text
    tokens. Depends only on ``(seed, step)``.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    names = sorted(streams)
    n_text = T - 1 if bos_id is not None else T
    if weights is None:
        dom = torch.randint(len(names), (batch,), generator=g)
    else:
        dom = torch.multinomial(
            torch.tensor([float(weights.get(n, 0.0)) for n in names]),
            batch,
            replacement=True,
            generator=g,
        )
    rows = []
    for i in range(batch):  # batch-sized loop over a few dozen rows: index building only
        s = streams[names[int(dom[i])]]
        start = int(torch.randint(len(s) - n_text, (1,), generator=g))
        rows.append(s[start : start + n_text])
    x = torch.stack(rows)
    if bos_id is not None:
        x = torch.cat([torch.full((batch, 1), bos_id, dtype=torch.long), x], dim=1)
    return x


def backcopy_stream(
    alphabet: list[int],
    n_tokens: int,
    seed: int = 0,
    eos_id: int = 0,
    n_triggers: int = 4,
    fanout: int = 3,
    doc_len: int = 200,
) -> torch.Tensor:
    """A synthetic "bigram-backcopy" stream (Guo et al. 2024, *Active-dormant attention heads*).

    Tokens of ``alphabet`` (the tokenizer's reserved tokens, which no text produces) follow a
    sparse random bigram chain, except that after one of the last ``n_triggers`` tokens (the
    triggers) the next token copies the token *before* the trigger. Copying needs attention only
    at triggers; everywhere else, and on all text, those heads must do nothing: the pressure that
    makes them park their attention on a sink. Documents of ``doc_len`` tokens are separated by
    ``eos_id``. Deterministic in ``seed``.
    """
    g = torch.Generator().manual_seed(7_919 + seed)
    vocab = torch.as_tensor(list(alphabet), dtype=torch.long)
    n_states = len(vocab) - n_triggers
    succ = torch.stack(
        [torch.randperm(len(vocab), generator=g)[:fanout] for _ in range(len(vocab))]
    )  # [vocab, fanout]
    is_trigger = torch.zeros(len(vocab), dtype=torch.bool)
    is_trigger[n_states:] = True
    n_docs = n_tokens // (doc_len + 1) + 1
    # generate all documents at once, one position at a time (vectorised over documents)
    seq = torch.empty(n_docs, doc_len, dtype=torch.long)
    seq[:, 0] = torch.randint(n_states, (n_docs,), generator=g)
    seq[:, 1] = succ[seq[:, 0], torch.randint(fanout, (n_docs,), generator=g)]
    for t in range(2, doc_len):
        nxt = succ[seq[:, t - 1], torch.randint(fanout, (n_docs,), generator=g)]
        seq[:, t] = torch.where(is_trigger[seq[:, t - 1]], seq[:, t - 2], nxt)
    ids = torch.cat(
        [vocab[seq], torch.full((n_docs, 1), eos_id, dtype=torch.long)], dim=1
    ).flatten()
    return ids[:n_tokens]


def repeat_stream(
    alphabet: list[int],
    n_tokens: int,
    seed: int = 0,
    eos_id: int = 0,
    min_len: int = 6,
    max_len: int = 24,
) -> torch.Tensor:
    """A synthetic "repeat" stream: documents ``s s`` (a random sequence of ``alphabet`` tokens,
    then the same sequence again), separated by ``eos_id``.

    The second copy is predictable only by induction (attend to the token after the previous
    occurrence of the current one); in the first copy, and on text, where the current token has no
    earlier occurrence, an induction head has nothing to read and must do nothing. Deterministic
    in ``seed``; vectorised over documents.
    """
    g = torch.Generator().manual_seed(104_729 + seed)
    vocab = torch.as_tensor(list(alphabet), dtype=torch.long)
    docs, total = [], 0
    while total < n_tokens:
        n = 4096
        lengths = torch.randint(min_len, max_len + 1, (n,), generator=g)
        seqs = vocab[torch.randint(len(vocab), (n, max_len), generator=g)]
        keep = torch.arange(max_len)[None, :] < lengths[:, None]  # [doc, pos]
        first = seqs[keep].split(lengths.tolist())
        for s in first:
            docs.append(torch.cat([s, s, torch.tensor([eos_id])]))
        total += int((2 * lengths + 1).sum())
    return torch.cat(docs)[:n_tokens]


SYNTHETIC = {"repeat": repeat_stream, "backcopy": backcopy_stream}
assert tuple(SYNTHETIC) == TASKS, "training/config.py: TASKS names the synthetic domains"
