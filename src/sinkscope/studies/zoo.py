"""The zoo: train each sink-circuit variant with the same budget and seeds, then measure them.

Each run lives in ``OUT/<variant>-s<seed>/`` (a ``sinkscope train`` directory); a finished run
(``training.json`` with the same settings) is reused, an interrupted one resumes from its
checkpoint. Analyses per run: BOS attention per domain (the paper metric, offline corpus, T=40),
final validation loss, mean ‖b_Q‖, the first-block EPE massive coordinates and γ concentration on
them (learned positions + MLP only), and the residual-stream profile at index 0 (creating block,
massive activations), which every variant has.

>>> sorted(VARIANTS)[:3]
['full', 'gated', 'no_bq']
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import SinkscopeError
from ..io import check_owned, claim_dir, exclusive_dir, write_json_atomic
from ..models.loading import resolve_device

if TYPE_CHECKING:
    import os
    from typing import Sequence

    from ..training import TrainConfig


VARIANTS: dict[str, dict] = {
    "full": {},
    "no_bq": {"query_bias": False},
    "rotary": {"positions": "rotary"},
    "no_pos": {"positions": "none"},
    "no_mlp": {"mlp": False},
    "off_by_one": {"normaliser": "off_by_one"},
    "gated": {"normaliser": "gated"},
    "sink_logit": {"normaliser": "sink_logit"},
}
VARIANT_TEXT = {
    "full": "GPT-2 style: b_Q, learned positions, MLP, softmax",
    "no_bq": "query bias fixed at 0",
    "rotary": "rotary positions instead of learned",
    "no_pos": "no positional information at all",
    "no_mlp": "attention-only blocks",
    "off_by_one": "softmax with an extra zero logit",
    "gated": "softmax, sigmoid output gate per head dim",
    "sink_logit": "softmax with a learned per-head sink logit",
}


def budget_config(budget: str) -> TrainConfig:
    """The shared :class:`TrainConfig` of a budget: ``small`` (2-core CPU, the whole zoo of 16 runs
    in under 2 h) or ``gpu`` (wider, deeper, longer; one CUDA device)."""
    from ..training import TrainConfig

    recipe = dict(
        vocab=2048, bos=True, synthetic=0.7, task="repeat", lr=3e-3, weight_decay=0.1
    )  # the default model's recipe
    if budget == "small":
        return TrainConfig(
            n_layer=6,
            n_embd=128,
            n_head=8,
            context=64,
            batch=32,
            steps=400,
            eval_every=100,
            ckpt_every=200,
            **recipe,
        )
    if budget == "gpu":
        return TrainConfig(
            n_layer=8,
            n_embd=256,
            n_head=8,
            context=128,
            batch=64,
            steps=4000,
            eval_every=500,
            ckpt_every=1000,
            **recipe,
        )
    raise SinkscopeError(f"--budget {budget!r}: choose small or gpu")


@dataclass
class ZooResult:
    runs: pd.DataFrame  # one row per variant x seed x domain
    out: Path

    def frames(self) -> dict:
        """The result's tables: ``zoo`` (zoo.csv: per run and domain), ``variants`` (the mean
        over seeds per variant, zoo.md's table)."""
        return {"zoo": self.runs, "variants": self.table()}

    def table(self) -> pd.DataFrame:
        """Per variant (mean over seeds): BOS attention per domain, loss and circuit pieces."""
        r = self.runs
        wide = r.pivot_table(
            index=["variant", "seed"], columns="domain", values="bos_attention"
        ).reset_index()
        first = r[r.domain == "all"].set_index(["variant", "seed"])
        cols = [
            "val_loss",
            "bq_norm",
            "epe_massive",
            "gamma_ratio",
            "creating_block",
            "resid_massive",
            "steps",
            "seconds",
        ]
        wide = wide.join(first[cols], on=["variant", "seed"])
        num = [
            c
            for c in wide.columns
            if c not in ("variant", "seed", "epe_massive", "resid_massive", "creating_block")
        ]
        agg = wide.groupby("variant", sort=False)[num].mean()
        agg["seeds"] = wide.groupby("variant", sort=False)["seed"].count()
        agg["sink_sd"] = wide.groupby("variant", sort=False)["all"].std()
        for c in ("epe_massive", "resid_massive", "creating_block"):
            agg[c] = wide.groupby("variant", sort=False)[c].agg(
                lambda s: " / ".join(dict.fromkeys(str(v) for v in s))
            )  # per seed where they differ
        agg["formed"] = np.where(
            agg["all"] >= 0.3, "yes", np.where(agg["all"] >= 0.1, "weak", "no")
        )
        order = [v for v in VARIANTS if v in agg.index] + [
            v for v in agg.index if v not in VARIANTS
        ]
        return agg.loc[order].reset_index()

    def markdown(self) -> str:
        t = self.table()
        lines = [
            "| variant | what it changes | BOS attention (all) | nl | math | code | sink formed | val loss | mean ‖b_Q‖ | EPE massive coords | γ massive/other | creating block | index-0 massive coords |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for _, row in t.iterrows():
            sd = f" ± {row.sink_sd:.3f}" if row.seeds > 1 else ""
            dom = " | ".join(
                f"{row[d]:.3f}" if d in row and not pd.isna(row[d]) else "-"
                for d in ("nl", "math", "code")
            )
            gr = "-" if pd.isna(row.gamma_ratio) else f"{row.gamma_ratio:.2f}"
            lines.append(
                f"| {row.variant} | {VARIANT_TEXT.get(row.variant, '')} | {row['all']:.3f}{sd} | {dom} | {row.formed} | {row.val_loss:.3f} | "
                f"{row.bq_norm:.3f} | {row.epe_massive} | {gr} | {row.creating_block} | {row.resid_massive} |"
            )
        return "\n".join(lines)


def analyse_run(
    run_dir: Path,
    *,
    per_domain: int = 100,
    device: str = "cpu",
    dtype: str = "auto",
    progress: bool = False,
) -> list[dict]:
    """The zoo's per-run numbers (one dict per domain, ``all`` first)."""
    from ..analysis import (
        effective_positional_embedding,
        gamma,
        gamma_split,
        massive_coords,
        residual_profile,
    )
    from ..metrics import resolve_band
    from ..stages.measure import measure
    from ..stages.runner import RunOptions, load

    info = json.loads((run_dir / "training.json").read_text())
    cfg = info["config"]
    # the one load path: the run's model and the offline corpus, tokenised as measure does
    opts = RunOptions(
        model=str(run_dir), device=device, dtype=dtype, per_domain=per_domain, progress=progress
    )
    model, inputs = load(opts)
    ad = model.adapter
    res = measure(model, inputs, batch_size=64, progress=progress)
    summary = res.summary()
    band = resolve_band(None, ad.n_layers)
    bq = ad.b_Q[band[0] : band[1]].norm(dim=-1).mean().item()
    epe_coords, gratio = "-", float("nan")
    if ad.info().positional == "learned" and ad.info().has_mlp:
        epe0 = effective_positional_embedding(ad, 1)[0]
        coords, _ = massive_coords(epe0)
        epe_coords = " ".join(map(str, coords)) or "none"
        if coords and ad.info().has_query_bias:
            gs, _ = gamma_split(gamma(ad), coords, band)
            gratio = gs["ratio_of_means"]
    prof = residual_profile(model, inputs, batch_size=64, progress=False)
    cb = prof.creating_block()
    mid = band[1] - 1
    rm, _ = prof.massive(mid, ratio=20.0, min_abs=5.0)
    base = {
        "variant": run_dir.name.rsplit("-s", 1)[0],
        "seed": int(cfg["seed"]),
        "val_loss": info["final"]["val_loss"],
        "bq_norm": bq,
        "epe_massive": epe_coords,
        "gamma_ratio": gratio,
        "creating_block": "none" if cb is None else str(cb),
        "resid_massive": " ".join(map(str, rm[:4])) or "none",
        "steps": cfg["steps"],
        "seconds": info["seconds"],
    }
    bos = summary["bos_attention"]  # {domain: aggregate over the layer band}, "all" included
    return [
        {**base, "domain": dom, "bos_attention": bos[dom]["mean"]}
        for dom in ["all"] + [d for d in bos if d != "all"]
    ]


def run_zoo(
    out: str | os.PathLike[str],
    *,
    budget: str = "small",
    seeds: Sequence[int] = (0, 1),
    variants: Sequence[str] | None = None,
    device: str = "cpu",
    progress: bool = True,
    base: TrainConfig | None = None,
    per_domain: int = 100,
    dtype: str = "auto",
    figures: bool = True,
) -> ZooResult:
    """Train (or reuse) every ``variant`` x ``seed`` and analyse them (in ``dtype``, through the
    one load path); writes zoo.csv, zoo.md and, with ``figures``, the figures (in the run's
    ``--format``)."""
    from ..models.options import check_dtype

    check_dtype(dtype)
    variants = tuple(variants or VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SinkscopeError(
            f"unknown zoo variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}"
        )
    if not seeds:
        raise SinkscopeError("--seeds is empty; pass e.g. 0,1")
    base = base or budget_config(budget)
    for s in seeds:
        replace(base, seed=s).validate()
    resolve_device(device)
    out = check_owned(out, "zoo")  # only a folder sinkscope marked as a zoo is reused
    claim_dir(out, "zoo")
    with exclusive_dir(out, "sinkscope zoo"):
        return _run_zoo(
            out, budget, seeds, variants, device, progress, base, per_domain, dtype, figures
        )


def _finished_config(done: Path) -> dict | None:
    """The config a finished run recorded in ``training.json`` (None: absent or unreadable)."""
    try:
        return json.loads(done.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _run_zoo(
    out: Path,
    budget: str,
    seeds,
    variants,
    device: str,
    progress: bool,
    base,
    per_domain: int,
    dtype: str = "auto",
    figures: bool = True,
) -> ZooResult:
    from tqdm.auto import tqdm

    from ..training import train, training_texts
    from ..training.data import tokenizer_in

    texts = training_texts(base.data)
    tok = tokenizer_in(out / "tokenizer", texts, base.vocab)
    rows = []
    jobs = [(v, s) for v in variants for s in seeds]
    t0 = time.perf_counter()
    for v, s in tqdm(jobs, desc="zoo", unit="run", disable=not progress):
        cfg = replace(base, seed=s, **VARIANTS[v])
        run = out / f"{v}-s{s}"
        done = run / "training.json"
        if _finished_config(done) != asdict(cfg):
            resume = (run / "checkpoint.pt").exists() and not done.exists()
            train(
                cfg,
                run,
                resume=resume,
                force=not resume,
                tokenizer=tok,
                data=texts,
                progress=progress,
                device=device,
                command=f"sinkscope zoo --budget {budget} (variant {v}, seed {s})",
            )
        rows += analyse_run(run, device=device, dtype=dtype, per_domain=per_domain)
    result = ZooResult(pd.DataFrame(rows), out)
    result.runs.to_csv(out / "zoo.csv.tmp", index=False, float_format="%.6g")
    (out / "zoo.csv.tmp").replace(out / "zoo.csv")
    md = out / "zoo.md.tmp"
    md.write_text(
        f"# sinkscope zoo ({budget} budget, seeds {', '.join(map(str, seeds))})\n\n{result.markdown()}\n"
    )
    md.replace(out / "zoo.md")
    write_json_atomic(
        out / "zoo.json",
        {
            "budget": budget,
            "base": asdict(base),
            "seeds": list(seeds),
            "variants": list(variants),
            "seconds": round(time.perf_counter() - t0, 1),
        },
    )
    if figures:
        from ..report.zoo import zoo_figures

        zoo_figures(result, out)
    return result


from ..report.zoo import load_training_curves  # noqa: E402,F401  (re-exported)

__all__ = [
    "VARIANTS",
    "ZooResult",
    "analyse_run",
    "budget_config",
    "load_training_curves",
    "run_zoo",
]
