"""The interventions engine: run edits on batched inputs; sink metric, relocation and loss.

For every intervention and example: BOS attention over the layer band ("mid") and over all
layers ("all"), attention to index 1 (the sink *relocation* measure), and the next-token
cross-entropy (nats), all from one instrumented forward pass per batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import SinkscopeError
from .labels import PAPER_TABLE1

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch

    from .base import Intervention


DICKENS = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light"
)


@dataclass
class InterventionRun:
    """Per-example results of one intervention (arrays are None when not applicable)."""

    id: str
    description: str
    label: str = ""
    reason: str | None = None
    per_head: np.ndarray | None = (
        None  # [example, layer, head, key] second-half attention to keys (0, 1)
    )
    ce: np.ndarray | None = None  # [example] mean next-token cross-entropy (nats)
    extra: dict = field(default_factory=dict)

    @property
    def applicable(self) -> bool:
        return self.reason is None


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


@dataclass
class InterventionTable:
    """Every intervention's per-example results and the tables derived from them (the stage's
    :class:`~sinkscope.stages.intervene.InterveneResult` adds writing and figures)."""

    model: str
    inputs: object
    band: tuple[int, int]
    runs: list[InterventionRun]
    baseline_id: str
    seconds: float = 0.0
    coords: list[int] | None = None  # the massive coordinates every intervention (and Fig 5) used
    coords_rule: str = ""  # the rule that chose them (analysis.facts)
    seed: int = 0
    cache: dict = field(default_factory=dict)  # what seeded each Context (q_bar, creating block)
    model_info: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)  # CircuitFacts.record() of the run
    fig5_maps: dict = field(default_factory=dict)  # Fig 5: intervention -> [T, T] map or None
    fig5_tokens: list = field(default_factory=list)  # Fig 5's tokens, as text

    def summary(self) -> dict:
        """``summary.json`` of ``sinkscope intervene`` and the record of reproduce's stage: the
        inputs, settings, each intervention's status, and Table 1 as nested
        ``{scope: {dataset: {intervention: cell}}}``."""
        from ..metrics.sink import SE_ESTIMATOR

        table1: dict = {}
        for _, r in self.table().iterrows():
            cell = {
                "description": r.description,
                "applicable": bool(r.applicable),
                "reason": r.reason,
            }
            if r.applicable:
                cell |= {
                    k: float(r[k])
                    for k in (
                        "mean",
                        "se",
                        "pct_baseline",
                        "attn_to_1",
                        "ce",
                        "delta_ce",
                        "delta_ce_se",
                    )
                }
                cell["pct"] = cell.pop("pct_baseline")
            table1.setdefault(r.scope, {}).setdefault(r.dataset, {})[r.intervention] = cell
        return {
            "model": self.model,
            "model_info": self.model_info,
            "inputs": self.inputs.record(),
            "n_examples": len(self.inputs),
            "layer_band": list(self.band),
            "seed": self.seed,
            "coords": self.coords,
            "coords_rule": self.coords_rule,
            "interventions": {
                r.id: {"description": r.description, "applicable": r.applicable, "reason": r.reason}
                | (
                    {
                        "random_key_coords": {
                            str(k): v for k, v in r.extra["random_key_coords"].items()
                        },
                        "random_key_draw": r.extra.get("random_key_draw"),
                    }
                    if "random_key_coords" in r.extra
                    else {}
                )
                for r in self.runs
            },
            "estimators": {
                "se": SE_ESTIMATOR,
                "delta_ce_se": SE_ESTIMATOR + ", of the paired differences",
            },
            "facts": self.facts,
            "table1": table1,
            "seconds": round(self.seconds, 2),
        }

    def run(self, rid: str) -> InterventionRun:
        return next(r for r in self.runs if r.id == rid)

    def per_example(self, rid: str, scope: str = "mid", key: int = 0) -> np.ndarray:
        """``[example]`` head-mean, layer-band-mean attention to ``key`` (0 or 1)."""
        r = self.run(rid)
        L = r.per_head.shape[1]
        lo, hi = self.band if scope == "mid" else (0, L)
        return r.per_head[:, lo:hi, :, key].mean(axis=(1, 2))

    def per_example_frame(self) -> pd.DataFrame:
        """One row per applicable intervention × example: band / all-layer BOS, attention to 1, CE."""
        import numpy as np
        import pandas as pd

        frames = [
            pd.DataFrame(
                {
                    "intervention": r.id,
                    "example": np.arange(len(r.ce)),
                    "domain": self.inputs.domains,
                    "bos_attention": self.per_example(r.id, "mid"),
                    "bos_attention_all_layers": self.per_example(r.id, "all"),
                    "attn_to_1": self.per_example(r.id, "mid", key=1),
                    "ce": r.ce,
                }
            )
            for r in self.runs
            if r.applicable
        ]
        return pd.concat(frames, ignore_index=True)

    def table(self) -> pd.DataFrame:
        """One row per intervention × dataset (``all`` + each domain) × scope (``mid``, ``all``)."""
        import numpy as np
        import pandas as pd

        from ..metrics import aggregate

        groups = self.inputs.domain_masks()
        base = self.run(self.baseline_id)
        rows = []
        for scope in ("mid", "all"):
            for r in self.runs:
                for ds, sel in groups.items():
                    row = {
                        "intervention": r.id,
                        "description": r.description,
                        "dataset": ds,
                        "scope": scope,
                        "applicable": r.applicable,
                        "reason": r.reason or "",
                    }
                    if r.applicable:
                        agg = aggregate(
                            self.per_example(r.id, scope)[sel],
                            baseline=float(self.per_example(base.id, scope)[sel].mean()),
                        )
                        dce = aggregate(r.ce[sel] - base.ce[sel])
                        row |= {
                            "mean": agg["mean"],
                            "se": agg["se"],
                            "ci_low": agg["ci_low"],
                            "ci_high": agg["ci_high"],
                            "pct_baseline": agg["pct_baseline"],
                            "n": agg["n"],
                            "attn_to_1": float(self.per_example(r.id, scope, key=1)[sel].mean()),
                            "ce": float(r.ce[sel].mean()),
                            "delta_ce": dce["mean"],
                            "delta_ce_se": dce["se"],
                        }
                    paper = PAPER_TABLE1.get(r.id) if r.label else None
                    row["paper_mean"], row["paper_pct"] = (
                        paper if paper and ds == "all" and scope == "mid" else (np.nan, np.nan)
                    )
                    rows.append(row)
        return pd.DataFrame(rows)

    def markdown(self) -> str:
        """The Table 1 view: overall (mid), per dataset, and the all-layer variant."""
        import numpy as np

        t = self.table()
        out = []

        def fmt(x, spec):
            return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)

        for title, rows in (
            (
                f"BOS attention, layers {self.band[0]}..{self.band[1] - 1} (0-based), all inputs",
                t[(t.scope == "mid") & (t.dataset == "all")],
            ),
            ("BOS attention, all layers, all inputs", t[(t.scope == "all") & (t.dataset == "all")]),
        ):
            out += [
                f"### {title}",
                "",
                "| id | intervention | mean ± 2SE | % of baseline | attn to index 1 | Δ CE (nats) ± 2SE | paper, GPT-2 small: mean (%) |",
                "|---|---|---|---|---|---|---|",
            ]
            for _, r in rows.iterrows():
                if not r.applicable:
                    out.append(
                        f"| {r.intervention} | {r.description} | not applicable: {r.reason} | | | | |"
                    )
                    continue
                paper = (
                    f"{r.paper_mean:.3f} ({r.paper_pct:.1f})" if not np.isnan(r.paper_mean) else ""
                )
                out.append(
                    f"| {r.intervention} | {r.description} | {r['mean']:.3f} ± {2 * r.se:.3f} | {fmt(r.pct_baseline, '.1f')} | {r.attn_to_1:.3f} | {r.delta_ce:+.3f} ± {fmt(2 * r.delta_ce_se, '.3f')} | {paper} |"
                )
            out.append("")
        per = t[(t.scope == "mid") & (t.dataset != "all") & t.applicable]
        if len(per):
            ds = list(dict.fromkeys(per.dataset))
            out += [
                "### Per dataset (layers band): mean (% of baseline), Δ CE",
                "",
                "| id | " + " | ".join(ds) + " |",
                "|---|" + "---|" * len(ds),
            ]
            for rid, g in per.groupby("intervention", sort=False):
                cells = [
                    f"{g[g.dataset == d]['mean'].iloc[0]:.3f} ({fmt(g[g.dataset == d].pct_baseline.iloc[0], '.1f')}%), {g[g.dataset == d].delta_ce.iloc[0]:+.2f}"
                    for d in ds
                ]
                out.append(f"| {rid} | " + " | ".join(cells) + " |")
        return "\n".join(out) + "\n"


def run_interventions(
    model,
    inputs,
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
    model,
    ids: torch.Tensor,
    interventions: dict[str, Intervention],
    band,
    *,
    coords=None,
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


def fig5_ids(model, inputs, sentence: str | None = None, max_tokens: int = 40) -> list[int]:
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
