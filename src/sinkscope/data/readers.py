"""Readers of each ``--inputs`` kind: the paper's CSV and its shipped copy, text and JSONL
files, HF datasets and the paper's protocol from the hub; each returns :class:`Example` texts
(not yet tokenised). One policy for text: UTF-8, or one line naming the file."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import SinkscopeError
from .spec import PAPER_SOURCES

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class Example:
    text: str
    domain: str
    source: str = ""
    meta: dict = field(default_factory=dict)


def _existing_file(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if p.exists() and not p.is_file():
        raise SinkscopeError(
            f"{what} file {path} is not a regular file (a folder or a device); pass a file"
        )
    if not p.is_file():
        raise SinkscopeError(f"{what} file {path} does not exist; check the path")
    if p.stat().st_size == 0:
        raise SinkscopeError(f"{what} file {path} is empty; give a file with at least one text")
    return p


def read_utf8(p: Path, what: str) -> str:
    """The file's text; a file that is not UTF-8 is a one-line error saying where it breaks."""
    data = p.read_bytes()
    try:
        return data.decode("utf-8-sig")  # a leading byte-order mark (Excel's UTF-8 CSV) is dropped
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise SinkscopeError(
            f"{what} file {p} is not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); "
            "re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def read_paper_csv(path: str) -> list[Example]:
    """The study's prepared inputs: columns ``dataset, text`` (and ``kind``, ``source_index``...).
    Fields of any length are read (texts are cut to ``--max-tokens`` afterwards)."""
    import io
    import sys

    p = _existing_file(path, "paper-csv")
    text = read_utf8(p, "paper-csv")
    limit = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # the default 128 KB would reject long texts
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames or not {"dataset", "text"} <= set(reader.fieldnames):
            raise SinkscopeError(
                f"{path} needs the columns 'dataset' and 'text' (the format of paper-inputs.csv)"
            )
        rows = list(reader)
    except csv.Error as e:
        raise SinkscopeError(
            f"{path} is not a readable CSV (line {reader.line_num}: {e}); check its quoting"
        ) from None
    finally:
        csv.field_size_limit(limit)
    if any(r.get("text") is None or r.get("dataset") is None for r in rows):
        bad = next(
            i for i, r in enumerate(rows, 2) if r.get("text") is None or r.get("dataset") is None
        )
        raise SinkscopeError(
            f"{path}:{bad} has fewer fields than the header; every row needs 'dataset' and 'text'"
        )
    return [
        Example(
            text=r["text"],
            domain=r["dataset"],
            source=f"paper-csv:{p.name}",
            meta={k: v for k, v in r.items() if k != "text"},
        )
        for r in rows
    ]


PAPER_OFFLINE = (
    Path(__file__).resolve().parent.parent / "assets" / "paper-inputs" / "paper-inputs.csv"
)


def paper_offline() -> list[Example]:
    """The study's 300 inputs, shipped with sinkscope (``--inputs paper-offline``; sources and
    licences in ``assets/paper-inputs/SOURCES.md``): 100 per dataset, in the study's order
    (``--per-domain N`` keeps the first N of each).

    >>> ex = paper_offline()
    >>> len(ex), sorted({e.domain for e in ex}), ex[0].source
    (300, ['gsm8k', 'humaneval', 'sst2'], 'paper-offline')
    """
    return [
        Example(e.text, e.domain, "paper-offline", e.meta)
        for e in read_paper_csv(str(PAPER_OFFLINE))
    ]


def read_text(path: str) -> list[Example]:
    p = _existing_file(path, "text")
    lines = [ln.strip() for ln in read_utf8(p, "text").splitlines() if ln.strip()]
    if not lines:
        raise SinkscopeError(f"text file {path} has no non-blank lines; put one text per line")
    return [Example(text=ln, domain=p.stem, source=f"text:{p.name}") for ln in lines]


def read_jsonl(path: str, field_name: str) -> list[Example]:
    p = _existing_file(path, "jsonl")
    out = []
    for n, line in enumerate(read_utf8(p, "jsonl").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise SinkscopeError(
                f"{path}:{n} is not valid JSON ({e.msg}); one JSON object per line"
            ) from None
        if not isinstance(rec, dict) or field_name not in rec:
            raise SinkscopeError(
                f"{path}:{n} has no field '{field_name}'; name the text field in jsonl:PATH:FIELD"
            )
        text, domain = rec[field_name], rec.get("domain", p.stem)
        for name, v in ((field_name, text), ("domain", domain)):
            if not isinstance(v, str):
                raise SinkscopeError(
                    f"{path}:{n}: field '{name}' is {type(v).__name__}, not text; give it a string"
                )
        out.append(Example(text=text, domain=domain, source=f"jsonl:{p.name}"))
    if not out:
        raise SinkscopeError(f"jsonl file {path} has no records")
    return out


def _load_dataset(path, config, split):
    try:
        from datasets import load_dataset
    except ImportError:
        raise SinkscopeError(
            "hf: inputs need the datasets package: pip install 'sinkscope[datasets]'"
        ) from None
    try:
        return load_dataset(path, config, split=split)
    except Exception as e:  # network, unknown name, ...
        raise SinkscopeError(
            f"could not load dataset {path} ({type(e).__name__}: {str(e).splitlines()[0][:160]}); check the name or your network"
        ) from None


def read_hf(args: list[str], loader: Callable = _load_dataset) -> list[Example]:
    path, config, split, field_name = args if len(args) == 4 else [args[0], None, args[1], args[2]]
    ds = loader(path, config, split)
    return [
        Example(text=str(r[field_name]), domain=path.split("/")[-1], source=f"hf:{path}")
        for r in ds
    ]


def paper_protocol(
    tokenizer: PreTrainedTokenizerBase,
    n: int = 100,
    max_tokens: int = 40,
    seed: int = 42,
    loader: Callable = _load_dataset,
) -> list[Example]:
    """The study's selection: per source, texts with >= ``max_tokens`` tokens, shuffled with one
    ``random.Random(seed)`` used for the three sources in turn, the first ``n`` kept, each cut to
    exactly ``max_tokens`` tokens (decode, re-encode). Use GPT-2's tokenizer for the paper's texts."""
    rng = random.Random(seed)
    out = []
    for name, path, config, split, field_name in PAPER_SOURCES:
        texts = [str(r[field_name]) for r in loader(path, config, split)]
        lengths = [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        eligible = [(i, t) for i, (t, L) in enumerate(zip(texts, lengths)) if L >= max_tokens]
        rng.shuffle(eligible)
        for i, t in eligible[:n]:
            cut = truncate_text(tokenizer, t, max_tokens)
            if cut is not None:
                out.append(
                    Example(text=cut, domain=name, source=f"hf:{path}", meta={"source_index": i})
                )
    return out


def truncate_text(tokenizer: PreTrainedTokenizerBase, text: str, max_tokens: int) -> str | None:
    """Cut ``text`` to its first ``max_tokens`` tokens by decoding them (None if too short)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < max_tokens:
        return None
    return tokenizer.decode(ids[:max_tokens])


def read_examples(
    spec: str,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    per_domain: int | None = None,
    max_tokens: int = 40,
    seed: int = 0,
) -> list[Example]:
    """Read the texts an ``--inputs`` spec names (not yet tokenised)."""
    from .spec import parse_spec

    kind, args = parse_spec(spec)
    if kind == "default":
        from .corpus import default_corpus

        return default_corpus(seed=seed, per_domain=per_domain or 100)
    if kind == "paper":
        if tokenizer is None:
            raise SinkscopeError("--inputs paper needs a tokenizer to select texts by length")
        return paper_protocol(
            tokenizer, n=per_domain or 100, max_tokens=max_tokens, seed=42 if seed == 0 else seed
        )
    if kind == "paper-csv":
        return read_paper_csv(args[0])
    if kind == "paper-offline":
        return paper_offline()
    if kind == "text":
        return read_text(args[0])
    if kind == "jsonl":
        return read_jsonl(*args)
    return read_hf(args)
