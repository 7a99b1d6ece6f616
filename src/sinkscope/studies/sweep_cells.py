"""One ``sweep`` cell: its inputs (natural texts at the cell's length, or random / repeated
token ids), its rows (the preset's interventions, one row per domain × intervention) and its
cache: the key of everything it is computed from, and the cached record, read back checked."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from .sweep_result import SWEEP_COLUMNS

if TYPE_CHECKING:
    from ..data import TokenizedInputs
    from ..models import SinkModel
    from .sweep import Cell, SweepConfig

POOL_GROWTH = 4  # a natural cell whose domains join too few long texts reads 4x, 16x ... as many


def training_step(spec: str) -> int | None:
    """The training step a model spec stands for, where it says: a ``sinkscope train
    --save-at`` checkpoint (``studies.dynamics.checkpoint_step``), a hub revision ``@stepN``
    (Pythia) or a directory named ``step-N`` / ``step_N`` / ``stepN``; else None."""
    from .dynamics import checkpoint_step

    step = checkpoint_step(spec) if os.path.isdir(spec) else None
    if step is not None:
        return step
    m = re.search(r"(?:@|(?:^|[/\\])(?:checkpoint[-_])?)step[-_]?(\d+)(?:[/\\]?$)", spec)
    return int(m.group(1)) if m else None


def fingerprints(cfg: SweepConfig) -> dict:
    """What the cells are computed from besides their settings: ``{"models": {spec: hash of its
    files}, "inputs": hash of the inputs' file}`` (:mod:`sinkscope.models.fingerprint`), taken
    once per run, after the specs are checked and before any model loads."""
    from ..models.fingerprint import fingerprint

    return {
        "models": {m: fingerprint(m) for m in cfg.models},
        "inputs": inputs_fingerprint(cfg.inputs) if "natural" in cfg.contents else None,
    }


def inputs_fingerprint(spec: str) -> str | None:
    """A hash of the file an ``--inputs`` spec reads (``text:``, ``jsonl:``, ``paper-csv:``);
    the built-in sets are sinkscope's own (its version is in every key; ``default`` is drawn from
    Python's standard library, so the Python version); a hub dataset: None (its spec only)."""
    from ..data.readers import PAPER_OFFLINE
    from ..data.spec import parse_spec
    from ..models.fingerprint import files_fingerprint

    kind, args = parse_spec(spec)
    if kind in ("text", "jsonl", "paper-csv"):
        return files_fingerprint([Path(args[0]).expanduser()], names=False)
    if kind == "paper-offline":
        return files_fingerprint([PAPER_OFFLINE], names=False)
    return f"python {sys.version}" if kind == "default" else None


def cell_key(shared: dict, cell: Cell) -> str:
    """The cache key of ``cell``: its coordinates, the sweep's settings (``shared``, sinkscope's
    version included), the files of its model and, for natural text, of its inputs."""
    return hashlib.sha256(
        json.dumps(key_fields(shared, cell), sort_keys=True).encode()
    ).hexdigest()[:20]


def key_fields(shared: dict, cell: Cell) -> dict:
    """What :func:`cell_key` hashes (also stored in the cell's record)."""
    fps = shared.get("fingerprints") or {}
    return {
        "cell": asdict(cell),
        **{k: v for k, v in shared.items() if k != "fingerprints"},
        "model_files": (fps.get("models") or {}).get(cell.model),
        "input_files": fps.get("inputs") if cell.content == "natural" else None,
    }


TEXT_FIELDS = ("model", "content", "domain", "intervention", "description", "reason")
INT_FIELDS = ("length", "seed", "n")
NUMBER_FIELDS = ("bos_attention", "se", "pct_baseline", "attn_to_1", "delta_ce")


def read_cell(path: Path, cell: Cell) -> dict | None:
    """The cached record of ``cell`` at ``path``; None when there is none, or when it is damaged
    (not JSON, a row of other fields or types, another cell's): then one warning line on stderr
    names the file, and the cell is computed again."""
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
        why = _cell_problem(rec, cell)
    except (OSError, ValueError) as e:  # unreadable, not UTF-8, not JSON
        why = f"{type(e).__name__}: {str(e)[:80]}"
    if why is None:
        return rec
    warn_damaged(path, why)
    return None


def warn_damaged(path: Path, why: str) -> None:
    """One line on stderr: a cached result that cannot be used is computed again."""
    print(
        f"sinkscope: warning: the cached {path} is damaged ({why}); recomputing it", file=sys.stderr
    )


def _cell_problem(rec: object, cell: Cell) -> str | None:
    """Why a cell record cannot be used (None: it can)."""
    if not isinstance(rec, dict) or not isinstance(rec.get("rows"), list) or not rec["rows"]:
        return "no list of rows"
    if rec.get("cell") != asdict(cell):
        return "the record of another cell"
    if not isinstance(rec.get("loaded", {}), dict):
        return "'loaded' is not a mapping"
    number = lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))  # noqa: E731
    for i, row in enumerate(rec["rows"]):
        if not isinstance(row, dict):
            return f"row {i} is not a mapping"
        missing = [c for c in SWEEP_COLUMNS if c not in row]
        bad = (
            [c for c in TEXT_FIELDS if not isinstance(row.get(c), str)]
            + [c for c in INT_FIELDS if type(row.get(c)) is not int]
            + [c for c in NUMBER_FIELDS if not number(row.get(c))]
            + [c for c in ("applicable",) if not isinstance(row.get(c), bool)]
            + [c for c in ("step",) if row.get(c) is not None and type(row.get(c)) is not int]
        )
        if missing or bad:
            return f"row {i}: {'missing ' + ', '.join(missing) if missing else 'bad ' + ', '.join(bad)}"
    return None


def cell_inputs(model: SinkModel, cell: Cell, shared: dict) -> TokenizedInputs:
    """The cell's inputs: ``natural`` texts at ``cell.length`` tokens (short ones joined within
    their domain; seed > 0 resamples them), or ``random`` / ``repeated`` token ids (as many
    inputs as the natural regime would give: ``per_domain`` × 3)."""
    from ..data import effective_per_domain, read_examples, resolve_bos, tokenize_examples
    from ..data.content import lengthen, resample, synthetic_inputs

    tok = model.tokenizer
    bos = resolve_bos(model, shared["bos"])
    per_domain = effective_per_domain(shared["inputs"], shared["per_domain"])
    if cell.content != "natural":
        vocab = int(model.adapter.token_embedding_module().weight.shape[0])
        return synthetic_inputs(
            cell.content,
            tok,
            n=(per_domain or 100) * 3,
            length=cell.length,
            seed=cell.seed,
            vocab=min(vocab, len(tok)),
            bos=bos,
        )
    n_text = cell.length - 1 if bos else cell.length
    pool = per_domain
    while True:  # read as measure does; a larger pool only where joins are too few for the length
        raw = read_examples(
            shared["inputs"], tokenizer=tok, per_domain=pool, max_tokens=cell.length, seed=cell.seed
        )
        if not shared["inputs"].startswith("default"):  # the default corpus draws by seed itself
            raw = resample(raw, cell.seed)
        examples = lengthen(raw, tok, n_text)
        have = Counter(e.domain for e in examples)
        if (
            pool is None
            or pool >= per_domain * POOL_GROWTH**4
            or all(have[d] >= per_domain for d in {e.domain for e in raw})
        ):
            break
        pool *= POOL_GROWTH
    return tokenize_examples(
        examples,
        tok,
        max_tokens=cell.length,
        per_domain=per_domain,
        prepend_bos=bos,
        spec=f"{shared['inputs']}@{cell.length}:seed={cell.seed}",
    )


def run_cell(model: SinkModel, cell: Cell, shared: dict, *, batch_size: int = 32) -> list[dict]:
    """One cell: the ``intervene`` stage with the sweep's preset on the cell's inputs, one row per
    domain × intervention (``all`` first; the layer band's BOS attention; ``a`` is the
    baseline)."""
    from ..registry import get_stage
    from ..stages.runner import RunOptions, compute_stage, prepare

    limit = model.adapter.max_positions()
    if limit is not None and cell.length > limit:  # a fact about the model, recorded like any other
        return [
            {
                "model": cell.model,
                "step": training_step(cell.model),
                "length": cell.length,
                "content": cell.content,
                "seed": cell.seed,
                "domain": "all",
                "intervention": "a",
                "description": "baseline",
                "applicable": False,
                "reason": f"{cell.length} tokens do not fit this model's {limit} learned positions",
                **dict.fromkeys(
                    ("bos_attention", "se", "pct_baseline", "attn_to_1", "delta_ce"), float("nan")
                ),
                "n": 0,
            }
        ]
    inputs = cell_inputs(model, cell, shared)
    # the cell's work is the registered intervene stage, as `sinkscope intervene` runs it
    cfg = get_stage("intervene")(preset=shared["preset"], max_tokens=min(cell.length, 40))
    band = tuple(shared["band"]) if shared["band"] else None
    opts = RunOptions(model=cell.model, band=band, batch_size=batch_size, progress=False)
    prepare(cfg, opts)  # the preset's coordinate rule and (j)'s draw
    res = compute_stage(cfg, model, inputs, opts)
    t = res.table()
    t = t[t.scope == "mid"]
    step = training_step(cell.model)
    rows = []
    for _, r in t.iterrows():
        rows.append(
            {
                "model": cell.model,
                "step": step,
                "length": cell.length,
                "content": cell.content,
                "seed": cell.seed,
                "domain": r.dataset,
                "intervention": "a" if r.intervention == res.baseline_id else r.intervention,
                "description": r.description,
                "applicable": bool(r.applicable),
                "reason": r.reason or "",
                **{
                    k: (float(r[k]) if r.applicable else float("nan"))
                    for k in ("mean", "se", "pct_baseline", "attn_to_1", "delta_ce")
                },
                "n": int(r.n) if r.applicable else int(inputs.domain_masks()[r.dataset].sum()),
            }
        )
        rows[-1]["bos_attention"] = rows[-1].pop("mean")
    return rows
