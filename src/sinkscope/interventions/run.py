"""The interventions engine: run edits on batched inputs; sink metric, relocation and loss.

For every intervention and example: BOS attention over the layer band ("mid") and over all
layers ("all"), attention to index 1 (the sink *relocation* measure), and the next-token
cross-entropy (nats), all from one instrumented forward pass per batch.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..errors import SinkscopeError
from .table import InterventionRun, InterventionTable  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch

    from ..data import TokenizedInputs
    from ..models import SinkModel
    from .base import Intervention


DICKENS = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light"
)


def next_token_ce(
    logits: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor | None = None, chunk: int = 64
) -> torch.Tensor:
    """Mean next-token cross-entropy per example: ``[batch]`` (positions past a length ignored).

    ``logsumexp`` runs over cache-sized chunks of rows (4x faster than ``F.cross_entropy`` on a
    GPT-2 vocabulary here); no ``[rows, vocab]`` log-softmax is materialised.
    """
    import torch

    B, T, V = logits.shape
    flat = logits.reshape(B * T, V)
    lse = torch.cat(
        [torch.logsumexp(flat[i : i + chunk].float(), -1) for i in range(0, B * T, chunk)]
    ).view(B, T)
    target = logits[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1).float()  # [batch, T-1]
    nll = lse[:, :-1] - target
    if lengths is None:
        return nll.mean(-1)
    valid = torch.arange(T - 1, device=ids.device)[None, :] < (lengths.to(ids.device)[:, None] - 1)
    return (nll * valid).sum(-1) / valid.sum(-1)


def run_interventions(
    model: SinkModel,
    inputs: TokenizedInputs,
    interventions: dict[str, Intervention],
    *,
    coords: list[int] | None = None,
    seed: int = 0,
    band: tuple[int, int] | None = None,
    batch_size: int = 32,
    progress: bool = True,
    labels: dict[str, str] | None = None,
    cache: dict | None = None,
    k_sigma: float = 3.0,
    coords_rule: str = "sigma",
    result_cls: type | None = None,
) -> InterventionTable:
    """Run each intervention over all inputs (batched); not-applicable ones are recorded, not skipped.

    ``coords``: the massive coordinates, as a list (the user's) or a :class:`MassiveCoords` a run
    already chose; None applies :func:`choose_massive_coords` with ``coords_rule``: ``paper`` (the
    paper's (i): top-3 |EPE_0|), ``sigma`` (sinkscope's: mean + ``k_sigma`` std) or a rule of
    :data:`sinkscope.analysis.facts.RULES`.
    ``cache`` seeds every intervention's :class:`Context` (e.g. ``q_bar``, ``creating_block``).
    """
    from tqdm.auto import tqdm

    from ..analysis.facts import MassiveCoords, choose_massive_coords, resolve_rule
    from ..metrics import resolve_band
    from .base import Context, NotApplicable

    ad = model.adapter
    ad.require_forward()
    L = ad.n_layers
    band = resolve_band(band, L)
    if int(inputs.lengths.min()) < 2:
        raise SinkscopeError("interventions need inputs of at least 2 tokens")
    ad.check_length(int(inputs.ids.shape[1]))
    if not isinstance(coords, MassiveCoords):
        coords = choose_massive_coords(
            model, coords, k_sigma=k_sigma, rule=resolve_rule(coords_rule, "interventions")
        )
    facts, coords = coords, coords.list
    for rid, iv in interventions.items():  # arguments outside the model fail now, not mid-run
        try:
            iv.validate(Context(model, coords=coords, seed=seed))
        except NotApplicable:
            pass
        except SinkscopeError as e:
            raise SinkscopeError(f"intervention {rid} ({iv.describe()}): {e}") from None
    labels = labels or {}
    runs: list[InterventionRun] = []
    t0 = time.perf_counter()
    n_batches = (len(inputs) + batch_size - 1) // batch_size
    bar = tqdm(
        total=n_batches * len(interventions),
        desc=f"intervene {model.name}",
        unit="batch",
        disable=not progress,
    )
    for rid, iv in interventions.items():
        ctx = Context(model, coords=coords, seed=seed, cache=dict(cache or {}))
        runs.append(_run_one(model, inputs, rid, iv, ctx, labels.get(rid, ""), batch_size, bar))
        runs[-1].extra = {k: v for k, v in ctx.cache.items() if k not in (cache or {})}
    bar.close()
    base = "a" if "a" in interventions else next(iter(interventions))
    if not runs[[r.id for r in runs].index(base)].applicable:
        raise SinkscopeError(f"the baseline '{base}' is not applicable")
    return (result_cls or InterventionTable)(
        model.name,
        inputs,
        band,
        runs,
        base,
        seconds=time.perf_counter() - t0,
        coords=coords,
        seed=seed,
        cache=dict(cache or {}),
        model_info=ad.describe(),
        coords_rule=facts.rule,
    )


def _run_one(model, inputs, rid: str, iv, ctx, label: str, batch_size: int, bar) -> InterventionRun:
    """One intervention over every batch: per-head attention to keys 0 and 1, and the loss."""
    import torch

    from ..metrics import KeyAttentionCapture, key_attention
    from ..metrics.capture import NonFiniteError
    from .base import NotApplicable, apply

    run = InterventionRun(rid, iv.describe(), label)
    n_batches = (len(inputs) + batch_size - 1) // batch_size
    try:
        iv.check(ctx)
    except NotApplicable as e:
        run.reason = str(e)
        bar.update(n_batches)
        return run
    per_head, ce = [], []
    try:
        with (
            torch.inference_mode(),
            apply(model, iv, ctx=ctx),
            KeyAttentionCapture(model.adapter, (0, 1)) as cap,
        ):
            for start in range(0, len(inputs), batch_size):
                ids = inputs.ids[start : start + batch_size].to(model.device)
                lengths = inputs.lengths[start : start + batch_size] if inputs.ragged else None
                cap.reset()
                logits = model.hf(input_ids=ids, use_cache=False).logits
                probs = cap.stacked().float()  # [batch, layer, head, q_pos, key]
                per_head.append(
                    torch.stack(
                        [key_attention(probs, j, lengths=lengths) for j in (0, 1)], -1
                    ).cpu()
                )
                ce.append(next_token_ce(logits, ids, lengths).cpu())
                if not bool(torch.isfinite(ce[-1]).all()):
                    raise NonFiniteError("the cross-entropy is NaN / inf (the logits overflowed)")
                bar.update(1)
    except NonFiniteError as e:
        raise NonFiniteError(f"under intervention {rid} ({run.description}): {e}") from None
    run.per_head = torch.cat(per_head).numpy()
    run.ce = torch.cat(ce).double().numpy()
    return run


def attention_maps(
    model: SinkModel,
    ids: torch.Tensor,
    interventions: dict[str, Intervention],
    band: tuple[int, int],
    *,
    coords: list[int] | None = None,
    seed: int = 0,
    cache: dict | None = None,
) -> dict[str, np.ndarray | None]:
    """Fig 5: for one sequence ``ids [T]``, the head- and band-averaged attention map ``[T, T]``
    under each intervention (None where not applicable)."""
    import torch

    from ..metrics import KeyAttentionCapture
    from .base import Context, NotApplicable, apply

    ad = model.adapter
    T = int(ids.shape[-1])
    out = {}
    for rid, iv in interventions.items():
        ctx = Context(model, coords=coords, seed=seed, cache=dict(cache or {}))
        try:
            iv.check(ctx)
        except NotApplicable:
            out[rid] = None
            continue
        with (
            torch.inference_mode(),
            apply(model, iv, ctx=ctx),
            KeyAttentionCapture(ad, tuple(range(T))) as cap,
        ):
            ad.trunk()(input_ids=ids.view(1, T).to(model.device), use_cache=False)
            p = cap.stacked()[0, band[0] : band[1]]  # [layer, head, q_pos, k_pos]
        out[rid] = p.mean(dim=(0, 1)).double().cpu().numpy()
    return out


def fig5_ids(
    model: SinkModel, inputs: TokenizedInputs, sentence: str | None = None, max_tokens: int = 40
) -> list[int]:
    """The Fig 5 sentence tokenised with the run's own convention: the BOS token first when the
    run's inputs have one, ``max_tokens`` ids in all (as every input)."""
    tok = model.tokenizer
    head = [tok.bos_token_id] if inputs.bos else []
    return (
        head
        + tok(sentence or DICKENS, add_special_tokens=False)["input_ids"][: max_tokens - len(head)]
    )


def fig5_frame(maps: dict[str, np.ndarray | None]) -> pd.DataFrame:
    """``fig5.csv``: ``intervention, query, key, attention`` (head- and band-averaged, causal
    entries only), for every intervention that has a map."""
    import numpy as np
    import pandas as pd

    rows = []
    for rid, m in maps.items():
        if m is None:
            continue
        q, k = np.tril_indices(m.shape[0])
        rows.append(pd.DataFrame({"intervention": rid, "query": q, "key": k, "attention": m[q, k]}))
    return (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(columns=["intervention", "query", "key", "attention"])
    )
