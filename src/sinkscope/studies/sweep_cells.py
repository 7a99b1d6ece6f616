"""One ``sweep`` cell: its inputs (natural texts at the cell's length, or random / repeated
token ids) and its rows (the preset's interventions, one row per domain × intervention)."""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..data import TokenizedInputs
    from ..models import SinkModel
    from .sweep import Cell

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
