"""PNG figures of ``sinkscope explain`` (the paper's Figs 1-4 and 6-8)."""
from __future__ import annotations

import numpy as np

from .figures import plt, save_figure


def delta_histograms(delta_rc: np.ndarray, band, path, *, truncate: float | None = None, title_suffix=""):
    """Fig 1 / Fig 6: re-centred Δ at index 0 vs the other positions (layers in ``band``, pooled)."""
    d = delta_rc[:, band[0] : band[1]]  # [example, layer, head, pos]
    first = d[..., 0].ravel()
    rest = d[..., 1:].ravel()
    first, rest = first[~np.isnan(first)], rest[~np.isnan(rest)]
    hi = truncate if truncate is not None else float(max(first.max(), rest.max()))
    bins = np.linspace(0, hi, 80)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.hist(np.clip(rest, 0, hi), bins=bins, density=True, alpha=0.6, color="C0", label=f"other positions (n={rest.size:,})")
    ax.hist(np.clip(first, 0, hi), bins=bins, density=True, alpha=0.6, color="C3", label=f"index 0 (n={first.size:,})")
    ax.axvline(np.median(first), color="C3", ls="--", lw=1)
    ax.axvline(np.median(rest), color="C0", ls="--", lw=1)
    ax.set_xlabel("re-centred Δ = b_Q·W_K x_j − min_j (per example, layer, head)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title(f"Source-agnostic shift, layers {band[0]}..{band[1] - 1}{title_suffix} (dashed: medians)", fontsize=9)
    return save_figure(fig, path)


def alignment_strip(cos: np.ndarray, band, path):
    """Fig 2: cos(b_Q,h, W_K,h·EPE_j) per head; index 0 vs the other positions, per layer."""
    L = cos.shape[0]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    rng = np.random.default_rng(0)
    for i in range(L):
        other = cos[i, :, 1:].ravel()
        ax.scatter(i - 0.15 + 0.1 * rng.standard_normal(other.size) * 0.3, other, s=3, color="C0", alpha=0.25, label="other positions" if i == 0 else None)
        ax.scatter(i + 0.15 + 0.05 * rng.standard_normal(cos.shape[1]), cos[i, :, 0], s=14, color="C3", label="index 0 (one dot per head)" if i == 0 else None)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(L), [str(band[0] + i) for i in range(L)])
    ax.set_xlabel("layer (0-based)")
    ax.set_ylabel("cos(b_Q, W_K · EPE_j)")
    ax.set_ylim(-1, 1)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("Query bias aligns with the key of the first position's EPE", fontsize=9)
    return save_figure(fig, path)


def epe_validation_band(table, path):
    """Fig 3: median cos(EPE_i, R_i − O_i) per position with the p10-p90 band."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ax.fill_between(table.position, table.p10, table.p90, color="C0", alpha=0.25, label="p10-p90")
    ax.plot(table.position, table["median"], marker="o", ms=3, color="C0", label="median over inputs")
    ax.set_xlabel("position")
    ax.set_ylabel("cos(EPE_i, R_i − O_i)")
    ax.set_ylim(min(0.0, float(table.p10.min()) - 0.05), 1.02)
    ax.legend(fontsize=8)
    ax.set_title("EPE predicts what position adds after the first MLP", fontsize=9)
    return save_figure(fig, path)


def massive_coords_plot(epe0: np.ndarray, coords, k_sigma: float, path):
    """Fig 7: |EPE_0| per residual coordinate, the mean + kσ threshold and the massive coordinates."""
    a = np.abs(epe0)
    thr = a.mean() + k_sigma * a.std()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(np.arange(a.size), a, width=1.0, color="grey")
    for c in coords:
        ax.bar([c], [a[c]], width=3, color="C3")
        ax.annotate(f"{c}: {epe0[c]:+.0f}", (c, a[c]), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8, color="C3")
    ax.axhline(thr, color="C0", ls=":", lw=1, label=f"mean + {k_sigma:g}σ")
    ax.set_xlabel("residual coordinate")
    ax.set_ylabel("|EPE_0|")
    ax.legend(fontsize=8)
    ax.set_title("Massive activations of the first position's effective embedding", fontsize=9)
    return save_figure(fig, path)


def gamma_histograms(table, path, *, truncate: float | None = 4.0):
    """Fig 4 (truncated at 4) / Fig 8 (full): |γ| on the massive coordinates vs the rest."""
    m = table.abs_gamma[table.massive].to_numpy()
    o = table.abs_gamma[~table.massive].to_numpy()
    hi = truncate if truncate is not None else float(max(m.max(), o.max()))
    bins = np.linspace(0, hi, 60)
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ax.hist(np.clip(o, 0, hi), bins=bins, density=True, alpha=0.6, color="C0", label=f"other coords: mean {o.mean():.4f} (n={o.size:,})")
    ax.hist(np.clip(m, 0, hi), bins=bins, density=True, alpha=0.6, color="C3", label=f"massive coords: mean {m.mean():.4f} (n={m.size:,})")
    ax.set_xlabel("|γ_h[d]| = |b_Q,h · W_K,h[d, :]|" + (f" (clipped at {hi:g})" if truncate is not None else ""))
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title("Key projections read the massive coordinates through b_Q", fontsize=9)
    return save_figure(fig, path)


def attention_grid(maps: dict, labels: dict, tokens: list[str], path, *, title: str = ""):
    """Fig 5: one head- and layer-averaged attention map per intervention (n/a panels greyed)."""
    ids = list(maps)
    cols = min(5, len(ids))
    rows = (len(ids) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.1 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, rid in zip(axes.ravel(), ids):
        m = maps[rid]
        ax.set_title(f"({rid}) {labels.get(rid, '')}"[:48], fontsize=7)
        if m is None:
            ax.text(0.5, 0.5, "not applicable", ha="center", va="center", fontsize=8, color="grey", transform=ax.transAxes)
            continue
        ax.axis("on")
        ax.imshow(m, vmin=0, vmax=1, cmap="magma")
        ax.set_xticks([0, 1])
        ax.set_yticks([])
        ax.tick_params(labelsize=6)
        ax.text(0.98, 0.02, f"→0: {m[m.shape[0] // 2 :, 0].mean():.2f}\n→1: {m[m.shape[0] // 2 :, 1].mean():.2f}", transform=ax.transAxes, ha="right", va="bottom", fontsize=6, color="white")
    fig.suptitle(title or "Attention (mean over heads and band layers); rows: queries, columns: keys", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def intervention_bars(table, path):
    """Sink left (% of baseline) and loss added (Δ CE, nats) per intervention, ±2SE."""
    t = table[(table.scope == "mid") & (table.dataset == "all")]
    ids = list(t.intervention)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ok = t.applicable.to_numpy()
    x = np.arange(len(ids))
    a1.bar(x[ok], t["mean"][ok], yerr=2 * t.se[ok], capsize=3, color="C3", label="attention to index 0")
    a1.bar(x[ok] + 0.3, t.attn_to_1[ok], width=0.3, color="C0", label="attention to index 1")
    for i in x[~ok]:
        a1.text(i, 0.02, "n/a", ha="center", fontsize=7, color="grey", rotation=90)
    a1.set_xticks(x, ids)
    a1.set_ylabel("BOS attention (layer band)")
    a1.legend(fontsize=7)
    a1.set_title("Sink under each intervention", fontsize=9)
    a2.bar(x[ok], t.delta_ce[ok], yerr=2 * t.delta_ce_se.fillna(0)[ok], capsize=3, color="C2")
    a2.axhline(0, color="grey", lw=0.8)
    a2.set_xticks(x, ids)
    a2.set_ylabel("Δ next-token CE vs baseline (nats)")
    a2.set_title("Loss cost of each intervention", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def residual_norms(table, path, *, title: str = ""):
    """||a_0|| against the median norm of the other positions after every block (log scale)."""
    fig, ax = plt.subplots(figsize=(6.8, 3.4))
    ax.semilogy(table.block, table.norm_index0, marker="o", ms=3, color="C3", label="index 0")
    ax.semilogy(table.block, table.median_norm_other, marker="o", ms=3, color="C0", label="other positions (median)")
    ax.set_xlabel("after block (-1 = embeddings)")
    ax.set_ylabel("residual L2 norm")
    ax.legend(fontsize=8)
    ax.set_title(title or "Where index 0 becomes special", fontsize=9)
    return save_figure(fig, path)


def explain_figures(res, out, *, k_sigma: float = 3.0) -> dict[str, str]:
    """Every figure an :class:`~sinkscope.experiments.explain.ExplainResult` supports, in ``out``;
    returns ``{file name: caption}`` (figures whose analysis was skipped are left out)."""
    from pathlib import Path

    out = Path(out)
    s = res.data
    band = tuple(s["layer_band"])
    made = {}
    if "delta_rc" in res.arrays:
        d = res.arrays["delta_rc"]
        rest = d[:, band[0] : band[1], :, 1:]
        delta_histograms(d, band, out / "fig1_delta_hist.png", truncate=float(np.nanpercentile(rest, 99.5)) * 3, title_suffix=" (truncated)")
        delta_histograms(d, band, out / "fig6_delta_hist_full.png")
        made["fig1_delta_hist.png"] = "Fig 1: the source-agnostic shift Δ_j = b_Q·W_K x_j (re-centred) at index 0 vs every other position, layer band, truncated."
        made["fig6_delta_hist_full.png"] = "Fig 6: the same histogram without truncation."
    if "residual_profile" in res.frames:
        r = s["residual"]
        title = (f"Index 0 becomes special after block {r['creating_block']} (massive coords {r['massive_coords'][:5]})" if r["creating_block"] is not None
                 else "Index 0 never becomes special in the residual stream")
        residual_norms(res.frames["residual_profile"], out / "residual_norms.png", title=title)
        made["residual_norms.png"] = "Residual-stream norm of index 0 vs the other positions after every block: where the first position becomes special."
    if "alignment" in res.arrays:
        alignment_strip(res.arrays["alignment"], band, out / "fig2_alignment.png")
        made["fig2_alignment.png"] = "Fig 2: cos(b_Q, W_K·EPE_j) per head; index 0 (red) against the other positions (blue)."
    if "epe_validation" in res.frames:
        epe_validation_band(res.frames["epe_validation"], out / "fig3_epe_validation.png")
        made["fig3_epe_validation.png"] = "Fig 3: cos(EPE_i, R_i − O_i), how well the input-independent EPE predicts what position adds after the first MLP."
    if "gamma" in res.frames:
        gamma_histograms(res.frames["gamma"], out / "fig4_gamma_hist.png", truncate=4.0)
        gamma_histograms(res.frames["gamma"], out / "fig8_gamma_hist_full.png", truncate=None)
        made["fig4_gamma_hist.png"] = "Fig 4: |γ_h[d]| = |b_Q,h · W_K,h[d]| on the massive coordinates vs the other coordinates (clipped at 4)."
        made["fig8_gamma_hist_full.png"] = "Fig 8: the same without clipping."
    if "epe0" in res.arrays:
        massive_coords_plot(res.arrays["epe0"], s["epe"]["massive_coords"], k_sigma, out / "fig7_massive_coords.png")
        made["fig7_massive_coords.png"] = "Fig 7: |EPE_0| per residual coordinate; the massive coordinates exceed mean + kσ."
    return made


def shared_query_layers(frame, band, path) -> str:
    """Per layer (mean over heads): the share of index 0's logit advantage that the effective
    query bias q̄ explains, and the literal b_Q term's share where the model has one."""
    g = frame.groupby("layer")[["shared_query_share", "bq_share"]].mean()
    fig, ax = plt.subplots(figsize=(6.8, 3.4))
    x = g.index.to_numpy()
    ax.bar(x - 0.2, g.shared_query_share, 0.4, color="C3", label="shared query q̄")
    if g.bq_share.notna().any():
        ax.bar(x + 0.2, g.bq_share, 0.4, color="C1", label="literal b_Q")
    ax.axvspan(band[0] - 0.5, band[1] - 0.5, color="grey", alpha=0.12, lw=0, label="layer band")
    ax.axhline(1, color="grey", lw=0.8, ls="--")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("layer (0-based)")
    ax.set_ylabel("share of index 0's logit advantage")
    ax.legend(fontsize=8)
    ax.set_title("How much of the sink the query component shared by all positions explains", fontsize=9)
    save_figure(fig, path)
    return "Share of index 0's logit advantage over the other keys explained by the effective query bias q̄ (red) and by the literal b_Q (orange), per layer, mean over heads; 1 = all of it."
