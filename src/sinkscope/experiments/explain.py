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
from ..analysis.facts import epe_rule, residual_massive_coords
from ..errors import SinkscopeError
from ..metrics import resolve_band
from ..models import SinkModel


@dataclass
class ExplainResult:
    data: dict  # what summary() returns
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)  # name -> table (written as NAME.csv)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: object = None  # the TokenizedInputs of the forward analyses (None: weights only)
    k_sigma: float = 3.0

    def summary(self) -> dict:
        return self.data

    @property
    def tables(self) -> dict[str, str]:
        t = {f"{n}.csv": n.replace("_", " ") for n in self.frames}
        return t | ({"inputs.jsonl": "each input's text and token ids"} if self.inputs is not None else {})

    def write(self, out, *, figures: bool = True, extra: dict | None = None) -> dict[str, str]:
        """The tables (CSV), ``inputs.jsonl`` (when there were inputs), ``summary.json`` (plus
        ``extra``) and, with ``figures``, every figure the analyses support, in ``out``; returns
        ``{figure file: caption}``. The CLI and reproduce's circuit stages write through here."""
        from pathlib import Path

        from ..io import write_json_atomic
        from ..report.circuit import explain_figures

        out = Path(out)
        for name, table in self.frames.items():
            table.to_csv(out / f"{name}.csv", index=False, float_format="%.7g")
        if self.inputs is not None:
            self.inputs.write_jsonl(out / "inputs.jsonl")
        write_json_atomic(out / "summary.json", self.data | (extra or {}))
        return explain_figures(self, out, k_sigma=self.k_sigma) if figures else {}

    def format(self) -> str:
        """The text ``sinkscope explain`` prints."""
        return format_explain(self.data)


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


NO_BQ = "the model has no query bias, so γ = b_Q·W_K and cos(b_Q, ·) are zero / undefined"


def _weight_analyses(res: ExplainResult, ad, epe, coords, band, k_sigma: float, g_qbar=None) -> None:
    """γ (Figs 4, 8) and the b_Q / key alignment (Fig 2): the weight-only analyses. A model
    without b_Q gets γ with the effective query bias q̄ instead (``g_qbar``, when inputs gave
    one) and no alignment, each with the reason."""
    s, L = res.data, ad.n_layers
    has_bq = ad.info().has_query_bias
    try:
        if not has_bq and g_qbar is None:
            raise SinkscopeError(f"{NO_BQ}; give inputs (not --weights-only) and explain computes γ with the effective query bias q̄ instead")
        g = gamma(ad) if has_bq else g_qbar
        s["gamma_query"] = "b_Q" if has_bq else "the effective query bias q̄ (the model has no b_Q; analysis.shared_query)"
        res.frames["gamma_layer_head"] = pd.DataFrame(
            [{"layer": l, "head": h, "l2": float(g[l, h].norm())} for l in range(L) for h in range(ad.n_heads)]
        )
        if coords is None:
            raise SinkscopeError(f"γ split needs the massive coordinates; {s.get('coords_source')}")
        if not coords:
            raise SinkscopeError(f"no coordinate of EPE_0 exceeds mean + {k_sigma:g} std: no massive activations; pass --coords, a lower --sigma "
                                 "or --coords-rule paper (the paper's top-2 fallback)")
        s["gamma"], res.frames["gamma"] = gamma_split(g, coords, band)
    except SinkscopeError as e:
        _skip(s, "gamma", e)
    if epe is None or not has_bq:
        _skip(s, "alignment", SinkscopeError(NO_BQ if not has_bq else "needs the EPE (see the epe stage)"))
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
    res.frames["alignment"] = pd.DataFrame({"layer": lay.ravel(), "head": head.ravel(), "position": pos.ravel(), "cos": cos.flatten().double().numpy()})


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
    forward: bool = True,
    facts=None,
    seq_len: int | None = None,
) -> ExplainResult:
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
    from ..analysis.facts import resolve_facts

    ad = model.adapter
    L = ad.n_layers
    band = resolve_band(band, L)
    t0 = time.perf_counter()
    if facts is None:
        facts = resolve_facts(model, inputs, coords=coords, k_sigma=k_sigma, coords_rule=coords_rule, band=band, batch_size=batch_size,
                              progress=progress)
    k_sigma = facts.k_sigma
    s: dict = {"model": model.name, "model_info": ad.describe(), "layer_band": list(band), "k_sigma": k_sigma, "skipped": [],
               "inputs": inputs.record() if inputs is not None else None, "n_examples": len(inputs) if inputs is not None else 0,
               "facts": facts.record()}
    res = ExplainResult(data=s, inputs=inputs, k_sigma=k_sigma)
    T = int(inputs.ids.shape[1]) if inputs is not None else (seq_len or 40)

    # --- EPE and its massive coordinates (needs W_pos and the layer-0 MLP) ---------------------
    epe = None
    try:
        epe = effective_positional_embedding(ad, T)
        mc, mv = massive_coords(epe[0], k_sigma)
        s["epe"] = {"massive_coords": mc, "massive_values": mv, "massive_rule": epe_rule(k_sigma) + " (the paper's Fig 7)", "norm_index0": float(epe[0].norm()), "median_norm_other": float(epe[1:].norm(dim=-1).median())}
        if weights:
            res.arrays["epe0"] = epe[0].double().numpy()
            res.frames["epe_index0"] = pd.DataFrame({"coord": np.arange(epe.shape[1]), "value": epe[0].double().numpy()})
    except SinkscopeError as e:
        if weights:
            _skip(s, "epe", e)
    gc = facts.gamma_coords or facts.coords  # γ's rule (the paper's γ code by default); the run's otherwise
    coords = gc.list if gc.coords else ([] if "epe" in s else None)  # [] : the EPE rule found none
    s["coords_source"] = gc.rule

    if weights:
        g_qbar = None
        if not ad.info().has_query_bias:  # γ with q̄: the run's (reproduce's facts) or from these inputs
            from ..analysis.shared_query import shared_gamma, shared_query

            q_bar = facts.q_bar
            if q_bar is None and inputs is not None and forward and not ad.missing_tensors():
                q_bar = shared_query(model, inputs, batch_size=batch_size, progress=progress).q_bar
            g_qbar = shared_gamma(model, q_bar, T).float() if q_bar is not None else None
        _weight_analyses(res, ad, epe, coords, band, k_sigma, g_qbar)

    # --- forward-pass analyses: Δ (Figs 1, 6), EPE validation (Fig 3), decomposition check ---
    forward_stages = ("residual", "delta", "decomposition_check", "epe_validation")
    try:
        if not forward:
            raise SinkscopeError("not requested")
        ad.require_forward()
        if inputs is None:
            raise SinkscopeError("no inputs given (weight-only run)")
    except SinkscopeError as e:
        if forward:  # forward=False: not asked for (--weights-only, reproduce's weights stage)
            for stage in forward_stages:
                _skip(s, stage, e)
        inputs = None
    if inputs is not None:
        # where index 0 becomes special: every architecture (the run's facts computed the profile)
        prof = facts.profile if facts.profile is not None else residual_profile(model, inputs, batch_size=batch_size, progress=progress)
        res.frames["residual_profile"] = prof.table()
        created = facts.creating_block if facts.profile is not None else prof.creating_block()
        ratio = prof.norm0 / prof.norm_other
        mcoords, mvalues = residual_massive_coords(prof, band, created)  # as resolve_facts: entering the band when no block creates them
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
            res.frames["delta_percentiles"] = pct
            res.frames["delta_separation"] = sep
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
            res.frames["epe_validation"] = pd.DataFrame({"position": np.arange(c.shape[1]), "median": med, "p10": p10, "p90": p90})
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
                res.frames["epe_validation_full_block"] = pd.DataFrame({"position": np.arange(f.shape[1]), "median": np.nanmedian(f, axis=0),
                                                                        "p10": fp10, "p90": fp90})
                s["epe"]["validation_full_block"] = _validation_summary(f) | {"attention": FULL_BLOCK_ATTENTION}
        else:
            _skip(s, "epe_validation", SinkscopeError("needs the EPE (see the epe stage)"))
    s["seconds"] = round(time.perf_counter() - t0, 3)
    return res


@dataclass
class ExplainConfig:
    """``sinkscope explain`` as a stage: the paper's circuit analyses (Figs 1-4, 6-8).
    ``weights`` / ``forward`` select the weight-only and the forward-pass analyses (reproduce runs
    them as two stages); ``forward=False`` is ``--weights-only``."""

    weights: bool = True
    forward: bool = True
    seq_len: int | None = None  # positions of the weight-only analyses (default: the inputs', else 40)

    name = "explain"
    needs_forward = False
    facts = ("coords",)

    @property
    def weights_only(self) -> bool:
        return not self.forward

    def check(self) -> None:
        if not (self.weights or self.forward):
            raise SinkscopeError("explain needs the weight-only analyses, the forward ones or both")

    def compute(self, model, inputs, facts=None, *, band=None, batch_size: int = 32, progress: bool = True) -> ExplainResult:
        return explain(model, inputs if self.forward else None, band=band, batch_size=batch_size, progress=progress,
                       weights=self.weights, forward=self.forward, facts=facts, seq_len=self.seq_len)


def format_explain(s: dict) -> str:
    """An explain summary as text: γ, EPE, alignment, residual, Δ, decomposition, skipped."""
    lines = [f"model {s['model']}: layers {s['layer_band'][0]}..{s['layer_band'][1] - 1}"]
    if "gamma" in s:
        g = s["gamma"]
        lab = "γ" if s.get("gamma_query", "b_Q") == "b_Q" else "γ(q̄), with the effective query bias (no b_Q),"
        lines.append(
            f"  |{lab}| on coords {g['coords']} ({s['coords_source']}): mean {g['massive']['mean']:.4f}, median {g['massive']['median']:.4f}, n={g['massive']['count']:,}"
            f"; other coords: mean {g['other']['mean']:.4f}, median {g['other']['median']:.4f}, n={g['other']['count']:,}  (ratio {g['ratio_of_means']:.1f}x)"
        )
    if "epe" in s:
        e = s["epe"]
        vals = ", ".join(f"{c}: {v:+.1f}" for c, v in zip(e["massive_coords"], e["massive_values"]))
        lines.append(f"  EPE_0 massive coordinates: {vals}")
        if "validation_median_index0" in e:
            for what, v in (("MLP only", e), ("full block 0, causal", e.get("validation_full_block"))):
                if v:
                    lines.append(f"  EPE validation cos ({what}): median {v['validation_median_index0']:.4f} at index 0, >= {v['validation_min_median_other']:.4f} elsewhere; "
                                 f"global median {v['validation_global_median']:.4f} (all positions), {v['validation_global_median_other']:.4f} (positions >= 1)")
    if "alignment" in s:
        a = s["alignment"]
        lines.append(f"  cos(b_Q, W_K EPE_j): mean {a['index0_mean_cos']:+.3f} at index 0 vs {a['other_mean_cos']:+.3f} elsewhere")
    if "residual" in s:
        r = s["residual"]
        vals = ", ".join(f"{c}: {v:+.0f}" for c, v in zip(r["massive_coords"][:6], r["massive_values"][:6]))
        where = f"becomes special after block {r['creating_block']} (massive coords {vals})" if r["creating_block"] is not None else "never becomes special (norm ratio < 5x after every block)"
        lines.append(f"  index 0 {where}; norm ratio peaks at {r['max_norm_ratio']:.0f}x after block {r['max_norm_ratio_block']}")
    if "delta" in s:
        d = s["delta"]
        lines.append(f"  re-centred Δ: mean {d['index0_mean']:.2f} at index 0 vs {d['other_mean']:.2f} elsewhere; index-0 p10 above every other p90 in layers {d['layers_index0_p10_above_all_other_p90']}")
    if "decomposition_check" in s:
        lines.append(f"  decomposition: 4 terms sum to the model's scores within {s['decomposition_check']['max_abs_error']:.1e}")
    for sk in s["skipped"]:
        lines.append(f"  skipped {sk['stage']}: {sk['reason']}")
    return "\n".join(lines)
