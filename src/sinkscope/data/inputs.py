"""Input texts: the ``--inputs`` spec, readers, and the paper's fixed-length tokenisation.

Specs: ``default`` (offline corpus), ``paper-csv:PATH``, ``text:PATH`` (one text per non-blank
line), ``jsonl:PATH:FIELD``, ``hf:DATASET[:CONFIG]:SPLIT:FIELD`` and ``paper`` (the study's
protocol from the HF hub: SST-2 / GSM8K / HumanEval).

The spec itself (kinds, parsing) lives in :mod:`sinkscope.data.spec`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import SinkscopeError
from .spec import PAPER_SOURCES, SPEC_HELP, SPEC_KINDS, effective_per_domain, parse_spec  # noqa: F401  (re-exported)

MIN_KEEP = 4  # shortest text kept with keep_short (its second half must hold a query)


@dataclass
class Example:
    text: str
    domain: str
    source: str = ""
    meta: dict = field(default_factory=dict)


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

    def write_jsonl(self, path) -> None:
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


def _existing_file(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise SinkscopeError(f"{what} file {path} does not exist; check the path")
    if p.stat().st_size == 0:
        raise SinkscopeError(f"{what} file {path} is empty; give a file with at least one text")
    return p


def _read_utf8(p: Path, what: str) -> str:
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
    text = _read_utf8(p, "paper-csv")
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
    lines = [ln.strip() for ln in _read_utf8(p, "text").splitlines() if ln.strip()]
    if not lines:
        raise SinkscopeError(f"text file {path} has no non-blank lines; put one text per line")
    return [Example(text=ln, domain=p.stem, source=f"text:{p.name}") for ln in lines]


def read_jsonl(path: str, field_name: str) -> list[Example]:
    p = _existing_file(path, "jsonl")
    out = []
    for n, line in enumerate(_read_utf8(p, "jsonl").splitlines(), 1):
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
        out.append(
            Example(
                text=str(rec[field_name]),
                domain=str(rec.get("domain", p.stem)),
                source=f"jsonl:{p.name}",
            )
        )
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
    tokenizer, n: int = 100, max_tokens: int = 40, seed: int = 42, loader: Callable = _load_dataset
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


def truncate_text(tokenizer, text: str, max_tokens: int) -> str | None:
    """Cut ``text`` to its first ``max_tokens`` tokens by decoding them (None if too short)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < max_tokens:
        return None
    return tokenizer.decode(ids[:max_tokens])


def read_examples(
    spec: str, *, tokenizer=None, per_domain: int | None = None, max_tokens: int = 40, seed: int = 0
) -> list[Example]:
    """Read the texts an ``--inputs`` spec names (not yet tokenised)."""
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


def tokenize_examples(
    examples: Sequence[Example],
    tokenizer,
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
            "this model has no tokenizer (a partial checkpoint?); load a complete model to measure"
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


def resolve_bos(model, bos: str | bool = "auto") -> bool:
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
    model=None,
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
