"""``sinkscope explain``: the circuit analyses of the paper (Figs 1-4, 6-8) on one model.

Stages run only where the weights allow them; a stage that cannot run is listed in
``summary["skipped"]`` with the reason (e.g. the missing tensors of a partial checkpoint).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..analysis import (
    bq_key_alignment,
    delta_percentiles,
    effective_positional_embedding,
    epe_validation,
    epe_validation_full_block,
    gamma,
    gamma_split,
    massive_coords,
    residual_profile,
    recenter,
    score_terms,
    separation,
    source_agnostic_shift,
)
from ..analysis.decomposition import DELTA_STD
from ..analysis.facts import choose_massive_coords, resolve_rule
from ..errors import SinkscopeError
from ..metrics import resolve_band
from ..models import SinkModel


@dataclass
class ExplainResult:
    summary: dict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: object = None  # the TokenizedInputs of the forward analyses (None: weights only)

    def write(self, out, *, k_sigma: float = 3.0, figures: bool = True) -> dict[str, str]:
        """The tables (CSV), ``inputs.jsonl`` (when there were inputs) and, with ``figures``, every
        figure the analyses support, in ``out``; returns ``{figure file: caption}``. The CLI and
        reproduce's circuit stages write through here (each adds its own summary file)."""
        from pathlib import Path

        from ..report.circuit import explain_figures

        out = Path(out)
        for name, table in self.tables.items():
            table.to_csv(out / f"{name}.csv", index=False, float_format="%.7g")
        if self.inputs is not None:
            self.inputs.write_jsonl(out / "inputs.jsonl")
        return explain_figures(self, out, k_sigma=k_sigma) if figures else {}


FULL_BLOCK_ATTENTION = "causal (the model's own mask); the paper's code calls block 0's attention without a mask"


def _validation_summary(c: np.ndarray) -> dict:
    """EPE validation cos ``[example, pos]`` -> the medians the paper reports, keyed as in
    ``summary.json``: the median at index 0, the lowest per-position median elsewhere, the global
    median over all positions (index 0 included: the paper's "global median") and over
    positions >= 1."""
    med = np.nanmedian(c, axis=0)
    return {"validation_median_index0": float(med[0]), "validation_min_median_other": float(med[1:].min()),
            "validation_global_median": float(np.nanmedian(c)), "validation_global_median_other": float(np.nanmedian(c[:, 1:]))}


def _skip(summary: dict, stage: str, err: Exception) -> None:
    summary["skipped"].append({"stage": stage, "reason": str(err)})


def _weight_analyses(res: ExplainResult, ad, epe, coords, band, k_sigma: float) -> None:
    """γ (Figs 4, 8) and the b_Q / key alignment (Fig 2): the weight-only analyses."""
    s, L = res.summary, ad.n_layers
    try:
        g = gamma(ad)
        res.tables["gamma_layer_head"] = pd.DataFrame(
            [{"layer": l, "head": h, "l2": float(g[l, h].norm())} for l in range(L) for h in range(ad.n_heads)]
        )
        if coords is None:
            raise SinkscopeError(f"γ split needs the massive coordinates; {s.get('coords_source')}")
        if not coords:
            raise SinkscopeError(f"no coordinate of EPE_0 exceeds mean + {k_sigma:g} std: no massive activations; pass --coords, a lower --sigma "
                                 "or --coords-rule paper (the paper's top-2 fallback)")
        s["gamma"], res.tables["gamma"] = gamma_split(g, coords, band)
    except SinkscopeError as e:
        _skip(s, "gamma", e)
    if epe is None:
        _skip(s, "alignment", SinkscopeError("needs the EPE (see the epe stage)"))
        return
    cos = bq_key_alignment(ad, epe, band)  # [layer, head, pos]
    res.arrays["alignment"] = cos.double().numpy()
    s["alignment"] = {
        "index0_mean_cos": float(cos[..., 0].mean()),
        "other_mean_cos": float(cos[..., 1:].mean()),
        "index0_share_positive": float((cos[..., 0] > 0).double().mean()),
        "index0_p10_p90": [float(x) for x in torch.quantile(cos[..., 0].flatten().double(), torch.tensor([0.1, 0.9], dtype=torch.float64))],
        "other_median_cos": float(cos[..., 1:].double().median()),
    }
    lay, head, pos = np.meshgrid(np.arange(band[0], band[1]), np.arange(ad.n_heads), np.arange(cos.shape[-1]), indexing="ij")
    res.tables["alignment"] = pd.DataFrame({"layer": lay.ravel(), "head": head.ravel(), "position": pos.ravel(), "cos": cos.flatten().double().numpy()})


def explain(
    model: SinkModel,
    inputs=None,
    *,
    coords: list[int] | None = None,
    band: tuple[int, int] | None = None,
    k_sigma: float = 3.0,
    coords_rule: str = "paper",
    batch_size: int = 32,
    progress: bool = True,
    weights: bool = True,
) -> ExplainResult:
    """Run every structural analysis the model's weights (and ``inputs``, if given) allow.

    ``coords_rule``: how γ's massive coordinates are chosen without ``coords``: ``paper`` (the
    paper's γ code: mean + ``k_sigma`` sample std, else the top-2 |EPE_0|) or ``sigma``
    (sinkscope's: population std, and γ's split is skipped when nothing passes); see
    :mod:`sinkscope.analysis.facts`.

    ``weights=False`` leaves out the weight-only analyses (γ, the b_Q / key alignment), e.g. when
    ``sinkscope reproduce`` runs them as a stage of their own; the EPE is still computed (Fig 3
    needs it).
    """
    ad = model.adapter
    L = ad.n_layers
    band = resolve_band(band, L)
    t0 = time.perf_counter()
    s: dict = {"model": model.name, "model_info": ad.describe(), "layer_band": list(band), "k_sigma": k_sigma, "skipped": [],
               "inputs": inputs.record() if inputs is not None else None, "n_examples": len(inputs) if inputs is not None else 0}
    res = ExplainResult(summary=s, inputs=inputs)
    T = int(inputs.ids.shape[1]) if inputs is not None else 40

    # --- EPE and its massive coordinates (needs W_pos and the layer-0 MLP) ---------------------
    epe = None
    try:
        epe = effective_positional_embedding(ad, T)
        mc, mv = massive_coords(epe[0], k_sigma)
        s["epe"] = {"massive_coords": mc, "massive_values": mv, "norm_index0": float(epe[0].norm()), "median_norm_other": float(epe[1:].norm(dim=-1).median())}
        if weights:
            res.arrays["epe0"] = epe[0].double().numpy()
            res.tables["epe_index0"] = pd.DataFrame({"coord": np.arange(epe.shape[1]), "value": epe[0].double().numpy()})
    except SinkscopeError as e:
        _skip(s, "epe", e)
    facts = choose_massive_coords(model, coords, k_sigma=k_sigma, rule=resolve_rule(coords_rule, "gamma"))  # analysis/facts.py
    coords = facts.list if facts.coords else ([] if "epe" in s else None)  # [] : the EPE rule found none
    s["coords_source"] = facts.rule

    if weights:
        _weight_analyses(res, ad, epe, coords, band, k_sigma)

    # --- forward-pass analyses: Δ (Figs 1, 6), EPE validation (Fig 3), decomposition check ---
    forward_stages = ("residual", "delta", "decomposition_check", "epe_validation")
    try:
        ad.require_forward()
        if inputs is None:
            raise SinkscopeError("no inputs given (weight-only run)")
    except SinkscopeError as e:
        for stage in forward_stages:
            _skip(s, stage, e)
        inputs = None
    if inputs is not None:
        # where index 0 becomes special: every architecture
        prof = residual_profile(model, inputs, batch_size=batch_size, progress=progress)
        res.tables["residual_profile"] = prof.table()
        created = prof.creating_block()
        ratio = prof.norm0 / prof.norm_other
        mcoords, mvalues = prof.massive(created) if created is not None else ([], [])
        s["residual"] = {
            "creating_block": created,
            "massive_coords": mcoords,
            "massive_values": mvalues,
            "max_norm_ratio": float(ratio.max()),
            "max_norm_ratio_block": int(ratio.argmax()) - 1,
        }
        try:
            terms = score_terms(model, inputs.ids[: min(8, len(inputs))])
            s["decomposition_check"] = {"max_abs_error": float((terms.total() - terms.scores).abs().max()), "max_abs_score": float(terms.scores.abs().max()), "n_scores": int(terms.scores.numel())}
            delta_rc = recenter(source_agnostic_shift(model, inputs, batch_size=batch_size, progress=progress))
            res.arrays["delta_rc"] = delta_rc.double().numpy()
            pct = delta_percentiles(delta_rc)
            sep = separation(pct)
            res.tables["delta_percentiles"] = pct
            res.tables["delta_separation"] = sep
            in_band = sep[(sep.layer >= band[0]) & (sep.layer < band[1])]
            s["delta"] = {
                "std_estimator": DELTA_STD,  # delta_percentiles.csv's std column
                "index0_mean": float(in_band.index0_mean.mean()),
                "other_mean": float(in_band.other_mean.mean()),
                "layers_index0_p10_above_all_other_p90": [int(l) for l in sep.layer[sep.index0_p10_above_all_other_p90]],
                "per_layer": in_band.to_dict(orient="records"),
            }
        except SinkscopeError as e:  # rotary / QK-norm models: no literal decomposition
            for stage in ("delta", "decomposition_check"):
                _skip(s, stage, e)
        if epe is not None:
            ids = inputs.ids
            cosv = torch.cat([epe_validation(model, ids[i : i + 64]) for i in range(0, len(ids), 64)]).double().cpu()
            pos = torch.arange(cosv.shape[1])
            if inputs.ragged:
                cosv = cosv.masked_fill(pos[None, :] >= inputs.lengths[:, None], float("nan"))
            c = cosv.numpy()
            med = np.nanmedian(c, axis=0)
            p10, p90 = np.nanpercentile(c, [10, 90], axis=0)
            res.tables["epe_validation"] = pd.DataFrame({"position": np.arange(c.shape[1]), "median": med, "p10": p10, "p90": p90})
            s["epe"].update(_validation_summary(c))
            try:
                full = torch.cat([epe_validation_full_block(model, ids[i : i + 64]) for i in range(0, len(ids), 64)]).double().cpu()
            except SinkscopeError as e:
                _skip(s, "epe_validation_full_block", e)
            else:
                if inputs.ragged:
                    full = full.masked_fill(pos[None, :] >= inputs.lengths[:, None], float("nan"))
                f = full.numpy()
                fp10, fp90 = np.nanpercentile(f, [10, 90], axis=0)
                res.tables["epe_validation_full_block"] = pd.DataFrame({"position": np.arange(f.shape[1]), "median": np.nanmedian(f, axis=0),
                                                                        "p10": fp10, "p90": fp90})
                s["epe"]["validation_full_block"] = _validation_summary(f) | {"attention": FULL_BLOCK_ATTENTION}
        else:
            _skip(s, "epe_validation", SinkscopeError("needs the EPE (see the epe stage)"))
    s["seconds"] = round(time.perf_counter() - t0, 3)
    return res
