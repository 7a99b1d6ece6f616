"""Every structural analysis of the sink circuit that a model's weights (and inputs) allow: the
engine of ``sinkscope explain`` (paper Figs 1-4, 6-8).

An analysis that cannot run is listed in ``data["skipped"]`` with the reason (e.g. the missing
tensors of a partial checkpoint). :func:`run_analyses` returns plain data (summary dict, tables,
arrays); :class:`sinkscope.stages.explain.ExplainResult` writes and draws it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ..errors import SinkscopeError
from ..metrics import resolve_band
from . import (
    bq_key_alignment,
    delta_percentiles,
    effective_positional_embedding,
    epe_validation,
    epe_validation_full_block,
    gamma,
    gamma_split,
    massive_coords,
    recenter,
    residual_profile,
    score_terms,
    separation,
    source_agnostic_shift,
)
from .decomposition import DELTA_STD
from .facts import epe_rule, residual_massive_coords

if TYPE_CHECKING:
    from ..data import TokenizedInputs
    from ..models import SinkModel
    from .facts import CircuitFacts


@dataclass
class Analyses:
    """What the analyses produced: the summary (``data``), tables by name (written as
    ``NAME.csv``), arrays for the figures, the inputs of the forward part (None: weights only)."""

    data: dict
    dataframes: dict[str, pd.DataFrame] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: object = None
    k_sigma: float = 3.0


FULL_BLOCK_ATTENTION = (
    "causal (the model's own mask); the paper's code calls block 0's attention without a mask"
)


def _validation_summary(c: np.ndarray) -> dict:
    """EPE validation cos ``[example, pos]`` -> the medians the paper reports, keyed as in
    ``summary.json``: the median at index 0, the lowest per-position median elsewhere, the global
    median over all positions (index 0 included: the paper's "global median") and over
    positions >= 1."""
    med = np.nanmedian(c, axis=0)
    return {
        "validation_median_index0": float(med[0]),
        "validation_min_median_other": float(med[1:].min()),
        "validation_global_median": float(np.nanmedian(c)),
        "validation_global_median_other": float(np.nanmedian(c[:, 1:])),
    }


def _skip(summary: dict, stage: str, err: Exception) -> None:
    summary["skipped"].append({"stage": stage, "reason": str(err)})


NO_BQ = "the model has no query bias, so γ = b_Q·W_K and cos(b_Q, ·) are zero / undefined"


def _weight_analyses(res: Analyses, ad, epe, coords, band, k_sigma: float, g_qbar=None) -> None:
    """γ (Figs 4, 8) and the b_Q / key alignment (Fig 2): the weight-only analyses. A model
    without b_Q gets γ with the effective query bias q̄ instead (``g_qbar``, when inputs gave
    one) and no alignment, each with the reason."""
    s, L = res.data, ad.n_layers
    has_bq = ad.info().has_query_bias
    try:
        if not has_bq and g_qbar is None:
            raise SinkscopeError(
                f"{NO_BQ}; give inputs (not --weights-only) and explain computes γ with the effective query bias q̄ instead"
            )
        g = gamma(ad) if has_bq else g_qbar
        s["gamma_query"] = (
            "b_Q"
            if has_bq
            else "the effective query bias q̄ (the model has no b_Q; analysis.shared_query)"
        )
        res.dataframes["gamma_layer_head"] = pd.DataFrame(
            [
                {"layer": l, "head": h, "l2": float(g[l, h].norm())}
                for l in range(L)
                for h in range(ad.n_heads)
            ]
        )
        if coords is None:
            raise SinkscopeError(f"γ split needs the massive coordinates; {s.get('coords_source')}")
        if not coords:
            raise SinkscopeError(
                f"no coordinate of EPE_0 exceeds mean + {k_sigma:g} std: no massive activations; pass --coords, a lower --sigma "
                "or --coords-rule paper (the paper's top-2 fallback)"
            )
        s["gamma"], res.dataframes["gamma"] = gamma_split(g, coords, band)
    except SinkscopeError as e:
        _skip(s, "gamma", e)
    if epe is None or not has_bq:
        _skip(
            s,
            "alignment",
            SinkscopeError(NO_BQ if not has_bq else "needs the EPE (see the epe stage)"),
        )
        return
    cos = bq_key_alignment(ad, epe, band)  # [layer, head, pos]
    res.arrays["alignment"] = cos.double().numpy()
    s["alignment"] = {
        "index0_mean_cos": float(cos[..., 0].mean()),
        "other_mean_cos": float(cos[..., 1:].mean()),
        "index0_share_positive": float((cos[..., 0] > 0).double().mean()),
        "index0_p10_p90": [
            float(x)
            for x in torch.quantile(
                cos[..., 0].flatten().double(), torch.tensor([0.1, 0.9], dtype=torch.float64)
            )
        ],
        "other_median_cos": float(cos[..., 1:].double().median()),
    }
    lay, head, pos = np.meshgrid(
        np.arange(band[0], band[1]), np.arange(ad.n_heads), np.arange(cos.shape[-1]), indexing="ij"
    )
    res.dataframes["alignment"] = pd.DataFrame(
        {
            "layer": lay.ravel(),
            "head": head.ravel(),
            "position": pos.ravel(),
            "cos": cos.flatten().double().numpy(),
        }
    )


def run_analyses(
    model: SinkModel,
    inputs: TokenizedInputs | None = None,
    *,
    coords: list[int] | None = None,
    band: tuple[int, int] | None = None,
    k_sigma: float = 3.0,
    coords_rule: str = "paper",
    batch_size: int = 32,
    progress: bool = True,
    weights: bool = True,
    forward: bool = True,
    facts: CircuitFacts | None = None,
    seq_len: int | None = None,
) -> Analyses:
    """Run every structural analysis the model's weights (and ``inputs``, if given) allow.

    ``facts``: the run's :class:`~sinkscope.analysis.facts.CircuitFacts` (massive coordinates
    and their rule, the residual profile); None decides them here from ``coords`` / ``k_sigma``.
    ``coords_rule``: how γ's massive coordinates are chosen without ``coords``: ``paper`` (the
    paper's γ code: mean + ``k_sigma`` sample std, else the top-2 |EPE_0|) or ``sigma``
    (sinkscope's: population std, and γ's split is skipped when nothing passes); see
    :mod:`sinkscope.analysis.facts`.

    ``weights=False`` leaves out the weight-only analyses (γ, the b_Q / key alignment), e.g. when
    ``sinkscope reproduce`` runs them as a stage of their own; the EPE is still computed (Fig 3
    needs it). ``forward=False`` (or ``inputs=None``) runs the weight-only analyses alone; only
    ``forward=True`` lists the forward analyses that could not run.
    """
    from .facts import resolve_facts

    ad = model.adapter
    L = ad.n_layers
    band = resolve_band(band, L)
    t0 = time.perf_counter()
    if facts is None:
        facts = resolve_facts(
            model,
            inputs,
            coords=coords,
            k_sigma=k_sigma,
            coords_rule=coords_rule,
            band=band,
            batch_size=batch_size,
            progress=progress,
        )
    k_sigma = facts.k_sigma
    s: dict = {
        "model": model.name,
        "model_info": ad.describe(),
        "layer_band": list(band),
        "k_sigma": k_sigma,
        "skipped": [],
        "inputs": inputs.record() if inputs is not None else None,
        "n_examples": len(inputs) if inputs is not None else 0,
        "facts": facts.record(),
    }
    res = Analyses(data=s, inputs=inputs, k_sigma=k_sigma)
    T = int(inputs.ids.shape[1]) if inputs is not None else (seq_len or 40)

    epe = _epe_part(res, ad, T, k_sigma, weights)
    gc = facts.gamma_coords or facts.coords  # γ's rule (the paper's γ code); else the run's
    coords = gc.list if gc.coords else ([] if "epe" in s else None)  # [] : the EPE rule found none
    s["coords_source"] = gc.rule

    if weights:
        g_qbar = _gamma_qbar(model, inputs, facts, T, forward, batch_size, progress)
        _weight_analyses(res, ad, epe, coords, band, k_sigma, g_qbar)

    inputs = _forward_inputs(res, ad, inputs, forward)
    if inputs is not None:
        _forward_part(res, model, inputs, facts, band, epe, batch_size, progress)
    s["seconds"] = round(time.perf_counter() - t0, 3)
    return res


def _gamma_qbar(model, inputs, facts, T: int, forward: bool, batch_size: int, progress: bool):
    """γ with the effective query bias q̄ for a model without b_Q (the run's q̄, or one from
    these inputs); None for a model with b_Q or without a q̄."""
    ad = model.adapter
    if ad.info().has_query_bias:
        return None
    from .shared_query import shared_gamma, shared_query

    q_bar = facts.q_bar
    if q_bar is None and inputs is not None and forward and not ad.missing_tensors():
        q_bar = shared_query(model, inputs, batch_size=batch_size, progress=progress).q_bar
    return shared_gamma(model, q_bar, T).float() if q_bar is not None else None


def _forward_inputs(res: Analyses, ad, inputs, forward: bool):
    """The inputs of the forward-pass analyses (Δ, EPE validation, decomposition check), or None
    with the reason recorded for each (only when they were asked for)."""
    try:
        if not forward:
            raise SinkscopeError("not requested")
        ad.require_forward()
        if inputs is None:
            raise SinkscopeError("no inputs given (weight-only run)")
    except SinkscopeError as e:
        if forward:  # forward=False: not asked for (--weights-only, reproduce's weights stage)
            for stage in ("residual", "delta", "decomposition_check", "epe_validation"):
                _skip(res.data, stage, e)
        return None
    return inputs


def _epe_part(res: Analyses, ad, T: int, k_sigma: float, weights: bool):
    """EPE and its massive coordinates (needs W_pos and the layer-0 MLP); None when it cannot."""
    s = res.data
    epe = None
    try:
        epe = effective_positional_embedding(ad, T)
        mc, mv = massive_coords(epe[0], k_sigma)
        s["epe"] = {
            "massive_coords": mc,
            "massive_values": mv,
            "massive_rule": epe_rule(k_sigma) + " (the paper's Fig 7)",
            "norm_index0": float(epe[0].norm()),
            "median_norm_other": float(epe[1:].norm(dim=-1).median()),
        }
        if weights:
            res.arrays["epe0"] = epe[0].double().numpy()
            res.dataframes["epe_index0"] = pd.DataFrame(
                {"coord": np.arange(epe.shape[1]), "value": epe[0].double().numpy()}
            )
    except SinkscopeError as e:
        if weights:
            _skip(s, "epe", e)
    return epe


def _forward_part(
    res: Analyses, model, inputs, facts, band, epe, batch_size: int, progress: bool
) -> None:
    """Residual profile, Δ (Figs 1, 6), the decomposition check and EPE validation (Fig 3)."""
    s = res.data
    # where index 0 becomes special: every architecture (the run's facts computed the profile)
    prof = (
        facts.profile
        if facts.profile is not None
        else residual_profile(model, inputs, batch_size=batch_size, progress=progress)
    )
    res.dataframes["residual_profile"] = prof.table()
    created = facts.creating_block if facts.profile is not None else prof.creating_block()
    ratio = prof.norm0 / prof.norm_other
    mcoords, mvalues = residual_massive_coords(
        prof, band, created
    )  # as resolve_facts: entering the band when no block creates them
    s["residual"] = {
        "creating_block": created,
        "massive_coords": mcoords,
        "massive_values": mvalues,
        "max_norm_ratio": float(ratio.max()),
        "max_norm_ratio_block": int(ratio.argmax()) - 1,
    }
    try:
        terms = score_terms(model, inputs.ids[: min(8, len(inputs))])
        s["decomposition_check"] = {
            "max_abs_error": float((terms.total() - terms.scores).abs().max()),
            "max_abs_score": float(terms.scores.abs().max()),
            "n_scores": int(terms.scores.numel()),
        }
        delta_rc = recenter(
            source_agnostic_shift(model, inputs, batch_size=batch_size, progress=progress)
        )
        res.arrays["delta_rc"] = delta_rc.double().numpy()
        pct = delta_percentiles(delta_rc)
        sep = separation(pct)
        res.dataframes["delta_percentiles"] = pct
        res.dataframes["delta_separation"] = sep
        in_band = sep[(sep.layer >= band[0]) & (sep.layer < band[1])]
        s["delta"] = {
            "std_estimator": DELTA_STD,  # delta_percentiles.csv's std column
            "index0_mean": float(in_band.index0_mean.mean()),
            "other_mean": float(in_band.other_mean.mean()),
            "layers_index0_p10_above_all_other_p90": [
                int(l) for l in sep.layer[sep.index0_p10_above_all_other_p90]
            ],
            "per_layer": in_band.to_dict(orient="records"),
        }
    except SinkscopeError as e:  # rotary / QK-norm models: no literal decomposition
        for stage in ("delta", "decomposition_check"):
            _skip(s, stage, e)
    _epe_validation_part(res, model, inputs, epe)


def _epe_validation_part(res: Analyses, model, inputs, epe) -> None:
    """EPE validation (Fig 3): after the layer-0 MLP, and after the whole first block, causal."""
    s = res.data
    if epe is not None:
        ids = inputs.ids
        cosv = (
            torch.cat([epe_validation(model, ids[i : i + 64]) for i in range(0, len(ids), 64)])
            .double()
            .cpu()
        )
        pos = torch.arange(cosv.shape[1])
        if inputs.ragged:
            cosv = cosv.masked_fill(pos[None, :] >= inputs.lengths[:, None], float("nan"))
        c = cosv.numpy()
        med = np.nanmedian(c, axis=0)
        p10, p90 = np.nanpercentile(c, [10, 90], axis=0)
        res.dataframes["epe_validation"] = pd.DataFrame(
            {"position": np.arange(c.shape[1]), "median": med, "p10": p10, "p90": p90}
        )
        s["epe"].update(_validation_summary(c))
        try:
            full = (
                torch.cat(
                    [
                        epe_validation_full_block(model, ids[i : i + 64])
                        for i in range(0, len(ids), 64)
                    ]
                )
                .double()
                .cpu()
            )
        except SinkscopeError as e:
            _skip(s, "epe_validation_full_block", e)
        else:
            if inputs.ragged:
                full = full.masked_fill(pos[None, :] >= inputs.lengths[:, None], float("nan"))
            f = full.numpy()
            fp10, fp90 = np.nanpercentile(f, [10, 90], axis=0)
            res.dataframes["epe_validation_full_block"] = pd.DataFrame(
                {
                    "position": np.arange(f.shape[1]),
                    "median": np.nanmedian(f, axis=0),
                    "p10": fp10,
                    "p90": fp90,
                }
            )
            s["epe"]["validation_full_block"] = _validation_summary(f) | {
                "attention": FULL_BLOCK_ATTENTION
            }
    else:
        _skip(s, "epe_validation", SinkscopeError("needs the EPE (see the epe stage)"))
