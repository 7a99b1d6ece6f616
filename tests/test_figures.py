"""Every figure a researcher could put in a paper: nothing clipped or cut (titles, labels, tick
labels and names lie inside the figure, whole), legends never over the data, axis ranges that hold
every value (values above 1 included), titles computed from the data, and ``--format png|svg|pdf``.

Each figure function runs on small synthetic inputs (long model names, values above 1); the saved
figure is kept open and measured with matplotlib's renderer."""

from __future__ import annotations

import re
from types import SimpleNamespace

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.container import BarContainer

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sinkscope.report import circuit, compare, figures, zoo  # noqa: E402
from sinkscope.report.formats import FIGURE_FORMATS, current_format, figure_format, figure_name  # noqa: E402

LONG = "some-organisation-with-a-long-name/an-extremely-long-model-name-for-testing-1.5B-Instruct-GGUF-q4_k_m"
LONG2 = "/home/researcher/checkpoints/sinkgpt-no-query-bias-seed-3/final"
rng = np.random.default_rng(0)


@pytest.fixture
def kept(monkeypatch):
    """The figures ``save_figure`` closes, kept open (in order) for measuring."""
    real_close = plt.close
    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    yield figs
    for f in figs:
        real_close(f)


# --- measuring ---------------------------------------------------------------------------------

TOL = 1.0  # pixels


def _inside(inner, outer) -> bool:
    return (
        inner.x0 >= outer.x0 - TOL
        and inner.y0 >= outer.y0 - TOL
        and inner.x1 <= outer.x1 + TOL
        and inner.y1 <= outer.y1 + TOL
    )


def _overlap(a, b) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > TOL and min(a.y1, b.y1) - max(a.y0, b.y0) > TOL


def _texts_of(fig):
    """Every non-empty visible title-like text of the figure: axes titles, axis labels, the
    figure's suptitle / supxlabel, legend texts."""
    out = []
    for ax in fig.axes:
        out += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        if ax.get_legend():
            out += ax.get_legend().get_texts()
    out += [t for t in (fig._suptitle, fig._supxlabel, fig._supylabel) if t is not None]
    for lg in fig.legends:
        out += lg.get_texts()
    return [t for t in out if t.get_visible() and t.get_text().strip()]


def _drawn_ticklabels(axis):
    lo, hi = sorted(axis.get_view_interval())
    locs = axis.get_majorticklocs()
    labels = axis.get_majorticklabels()
    return [
        t
        for loc, t in zip(locs, labels)
        if lo - 1e-9 <= loc <= hi + 1e-9 and t.get_visible() and t.get_text().strip()
    ]


def _parts(ax, r):
    """The boxes a panel draws: the axes area, its titles, axis labels, drawn tick labels, legend."""
    out = [ax.get_window_extent(r)] if ax.axison else []
    texts = [ax.title, ax._left_title, ax._right_title]
    if ax.axison:
        texts += (
            [ax.xaxis.label, ax.yaxis.label]
            + _drawn_ticklabels(ax.xaxis)
            + _drawn_ticklabels(ax.yaxis)
        )
    out += [t.get_window_extent(r) for t in texts if t.get_visible() and t.get_text().strip()]
    if ax.get_legend() is not None:
        out.append(ax.get_legend().get_window_extent(r))
    return out


def _legends(fig):
    return [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)


def _data_marks(ax, r):
    """Display-space boxes of bars and points of lines / scatters / error bars in ``ax``."""
    boxes, points = [], []
    for c in ax.containers:
        if isinstance(c, BarContainer):
            boxes += [p.get_window_extent(r) for p in c.patches if p.get_height() != 0]
    for line in ax.lines:
        xy = np.asarray(line.get_xydata(), dtype=float)
        xy = xy[np.isfinite(xy).all(axis=1)]
        if xy.size:
            points.append(line.get_transform().transform(xy))
    for coll in ax.collections:
        if isinstance(coll, PathCollection) and len(coll.get_offsets()):
            off = np.asarray(coll.get_offsets(), dtype=float)
            points.append(coll.get_offset_transform().transform(off[np.isfinite(off).all(axis=1)]))
        elif isinstance(coll, LineCollection):
            for seg in coll.get_segments():
                seg = np.asarray(seg, dtype=float)
                if seg.size and np.isfinite(seg).all():
                    points.append(coll.get_transform().transform(seg))
    for im in ax.images:
        boxes.append(im.get_window_extent(r))
    return boxes, (np.concatenate(points) if points else np.zeros((0, 2)))


def check_layout(fig):
    """The checks every figure must pass, on the figure as saved."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    fb = fig.bbox
    # 1. everything drawn lies inside the figure: axes with their titles, labels, tick labels and
    #    legends; figure titles and legends
    for ax in fig.axes:
        tb = ax.get_tightbbox(r)
        if tb is not None:
            assert _inside(tb, fb), (
                f"axes '{ax.get_title()[:40]}' (with its labels) sticks out of the figure: {tb} vs {fb}"
            )
    for t in _texts_of(fig):
        assert _inside(t.get_window_extent(r), fb), (
            f"text clipped by the figure edge: {t.get_text()[:60]!r}"
        )
    for lg in fig.legends:
        assert _inside(lg.get_window_extent(r), fb), "figure legend clipped"
    # 2. nothing overlaps: panels (with their titles, tick labels and legends), the figure title and
    #    figure legends
    parts = {ax: _parts(ax, r) for ax in fig.axes if ax.axison or ax.get_title()}
    axs = list(parts)
    for i, a in enumerate(axs):
        for b in axs[i + 1 :]:
            for pa in parts[a]:
                for pb in parts[b]:
                    assert not _overlap(pa, pb), (
                        f"panels overlap: '{a.get_title()[:30]}' and '{b.get_title()[:30]}'"
                    )
    extra = [t for t in (fig._suptitle, fig._supxlabel) if t is not None and t.get_text()] + list(
        fig.legends
    )
    for e in extra:
        eb = e.get_window_extent(r)
        for ax, ps in parts.items():
            assert not any(_overlap(eb, p) for p in ps), (
                f"figure-level text / legend overlaps the panel '{ax.get_title()[:30]}'"
            )
    # 3. tick labels of one axis do not run into each other
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            boxes = [t.get_window_extent(r) for t in _drawn_ticklabels(axis)]
            for i in range(len(boxes) - 1):
                for j in range(i + 1, len(boxes)):
                    assert not _overlap(boxes[i], boxes[j]), (
                        f"tick labels overlap on '{ax.get_title()[:30]}'"
                    )
    # 4. legends do not cover data (bars, line points, scatter points, error bars, images)
    for lg in _legends(fig):
        lb = lg.get_window_extent(r)
        for ax in fig.axes:
            boxes, pts = _data_marks(ax, r)
            for b in boxes:
                assert not _overlap(lb, b), (
                    f"the legend covers a bar / image of '{ax.get_title()[:30]}'"
                )
            inside = (
                (pts[:, 0] > lb.x0 + TOL)
                & (pts[:, 0] < lb.x1 - TOL)
                & (pts[:, 1] > lb.y0 + TOL)
                & (pts[:, 1] < lb.y1 - TOL)
            )
            assert not inside.any(), (
                f"the legend covers {int(inside.sum())} data points of '{ax.get_title()[:30]}'"
            )
    # 5. axis ranges hold every value: bars, error bars, line and scatter points within the limits
    for ax in fig.axes:
        if not ax.axison or ax.get_xscale() != "linear" and ax.get_yscale() != "linear":
            continue
        boxes, pts = _data_marks(ax, r)
        ab = ax.get_window_extent(r)
        for b in boxes:
            assert _inside(b, ab), (
                f"a bar / image of '{ax.get_title()[:30]}' is cut by the axis limits"
            )
        if len(pts):
            ok = (
                (pts[:, 0] >= ab.x0 - TOL)
                & (pts[:, 0] <= ab.x1 + TOL)
                & (pts[:, 1] >= ab.y0 - TOL)
                & (pts[:, 1] <= ab.y1 + TOL)
            )
            assert ok.all(), (
                f"{int((~ok).sum())} data points of '{ax.get_title()[:30]}' lie outside the axis limits"
            )
    return r


def all_text(fig) -> str:
    """Every string drawn in the figure, whitespace removed (wrapping inserts line breaks)."""
    parts = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    return re.sub(r"\s+", "", " ".join(parts))


def _flat(s: str) -> str:
    return re.sub(r"\s+", "", s)


# --- synthetic inputs ----------------------------------------------------------------------------


def measure_result(model=LONG):
    return SimpleNamespace(
        model=model,
        bos_attention=rng.random((3, 6, 8)),
        band=(2, 5),
        alpha=rng.random((3, 6, 8, 2)),
        keys=(0, 1),
        eps=0.3,
    )


def measure_summary(model=LONG):
    per = {
        d: list(np.clip(rng.random(6) * 0.5 + 0.5, 0, 0.99))
        for d in ("all", "nl", "math", "code", "a-dataset-with-a-long-name")
    }
    per["all"][5] = 0.99
    return {
        "model": model,
        "n_examples": 12,
        "uniform_baseline": 0.034,
        "layer_band": [2, 5],
        "bos_attention": {
            "all": {"mean": 0.97, "se": 0.03},
            "nl": {"mean": 0.6, "se": 0.05},
            "math": {"mean": 0.1, "se": float("nan")},
            "a-dataset-with-a-long-name": {"mean": 0.99, "se": 0.02},
        },
        "bos_attention_per_layer": per,
    }


def gamma_table(massive_scale=7.8, zero=False, coords=(3, 9)):
    L, H, D = 2, 4, 32
    layer, head, coord = np.meshgrid(np.arange(L), np.arange(H), np.arange(D), indexing="ij")
    g = rng.standard_normal(layer.shape) * 0.1
    massive = np.isin(coord, coords)
    g[massive] *= massive_scale
    if zero:
        g[:] = 0.0
    t = pd.DataFrame(
        {
            "layer": layer.ravel(),
            "head": head.ravel(),
            "coord": coord.ravel(),
            "gamma": g.ravel(),
            "massive": massive.ravel(),
        }
    )
    t["abs_gamma"] = t.gamma.abs()
    return t


def interventions_table():
    ids = list("abcdefghij")
    rows = []
    for i, rid in enumerate(ids):
        rows.append(
            {
                "scope": "mid",
                "dataset": "all",
                "intervention": rid,
                "applicable": rid != "e",
                "mean": [0.97, 0.95, 0.4, 0.9, np.nan, 0.3, 0.2, 0.5, 0.6, 0.94][i],
                "se": 0.02,
                "attn_to_1": 0.05 + 0.01 * i,
                "delta_ce": [0, 0.01, 0.4, 0, np.nan, 0.7, 3.6, 0.5, -0.02, 0][i],
                "delta_ce_se": 0.1,
            }
        )
    return pd.DataFrame(rows)


def shared_frame(above_1=True):
    rows = []
    for layer in range(6):
        for h in range(4):
            share = (1.6 if layer in (0, 4) and above_1 else 0.7) + 0.05 * h
            rows.append(
                {
                    "domain": "all",
                    "layer": layer,
                    "head": h,
                    "shared_query_share": share,
                    "bq_share": -0.05 if layer == 1 else 0.02,
                    "index0_advantage": -1.0 if layer == 0 and above_1 else 5.0,
                }
            )
    return pd.DataFrame(rows)


def compare_result():
    from sinkscope.stages.compare import COMPARE_EDITS

    rows = []
    for m in (LONG, LONG2, "default"):
        for d in ("all", "nl", "math", "code"):
            r = {"model": m, "domain": d, "bos_attention": rng.uniform(0.2, 0.98)}
            for e in COMPARE_EDITS:
                r[f"{e}_pct"] = (
                    float("nan") if (m == "default" and e == "bq0") else rng.uniform(5, 180)
                )
                r[f"{e}_delta_ce"] = rng.uniform(-0.1, 2)
            rows.append(r)
    return SimpleNamespace(rows=pd.DataFrame(rows))


def tradeoff_frame(model=LONG):
    rows = []
    for d in ("all", "nl", "math"):
        for e in ("bq", "qbar", "wk", "patch0"):
            for s in (1.0, 0.5, 0.0):
                rows.append(
                    {
                        "model": model,
                        "domain": d,
                        "edit": e,
                        "strength": s,
                        "bos_attention": 0.9 * (0.5 + 0.5 * s) if e != "bq" else 0.9,
                        "delta_ce": (1 - s) * rng.uniform(0, 2),
                    }
                )
    return pd.DataFrame(rows)


def zoo_result():
    rows = []
    for v in (
        "baseline",
        "no-query-bias",
        "no-positional-embedding",
        "rmsnorm-instead-of-layernorm",
    ):
        for seed in range(2):
            for d in ("all", "nl", "code"):
                rows.append(
                    {
                        "variant": v,
                        "seed": seed,
                        "domain": d,
                        "bos_attention": rng.uniform(0.05, 0.95),
                        "val_loss": rng.uniform(3, 5),
                    }
                )
    return SimpleNamespace(runs=pd.DataFrame(rows))


def zoo_curves():
    return {
        f"{v}-s{s}": [
            {"step": k * 50, "sink": min(0.99, 0.1 + 0.1 * k * (s + 1))} for k in range(8)
        ]
        for v in ("baseline", "no-query-bias")
        for s in range(2)
    }


FIGURES = {
    "bos_heatmap": lambda p: figures.bos_heatmap(measure_result(), p),
    "alpha_heatmap": lambda p: figures.alpha_heatmap(measure_result(), p),
    "domain_bars": lambda p: figures.domain_bars(measure_summary(), p),
    "layer_profile": lambda p: figures.layer_profile(measure_result(), measure_summary(), p),
    "delta_histograms": lambda p: circuit.delta_histograms(
        rng.gamma(1.5, 1.0, (4, 6, 4, 20)), (2, 5), p, truncate=3.0, title_suffix=" (truncated)"
    ),
    "delta_histograms_full": lambda p: circuit.delta_histograms(
        rng.gamma(1.5, 1.0, (4, 6, 4, 20)), (2, 5), p
    ),
    "alignment_strip": lambda p: circuit.alignment_strip(
        np.clip(rng.standard_normal((4, 8, 20)) * 0.5, -1, 1), (2, 6), p
    ),
    "epe_validation_band": lambda p: circuit.epe_validation_band(
        pd.DataFrame(
            {
                "position": np.arange(20),
                "median": np.linspace(0.95, -0.2, 20),
                "p10": np.linspace(0.9, -0.4, 20),
                "p90": np.linspace(0.99, 0.1, 20),
            }
        ),
        p,
    ),
    "massive_coords_plot": lambda p: circuit.massive_coords_plot(
        np.r_[rng.standard_normal(60) * 0.1, 3.0, rng.standard_normal(40) * 0.1], [60], 3.0, p
    ),
    "gamma_histograms": lambda p: circuit.gamma_histograms(
        gamma_table(massive_scale=60), p, truncate=4.0
    ),
    "gamma_histograms_full": lambda p: circuit.gamma_histograms(gamma_table(), p, truncate=None),
    "attention_grid": lambda p: circuit.attention_grid(
        {k: (None if k == "e" else np.tril(rng.random((12, 12)))) for k in "abcdefghij"},
        {
            k: f"an intervention with a long description that must wrap, not be cut ({k})"
            for k in "abcdefghij"
        },
        [f"t{i}" for i in range(12)],
        p,
    ),
    "intervention_bars": lambda p: circuit.intervention_bars(interventions_table(), p),
    "residual_norms": lambda p: circuit.residual_norms(
        pd.DataFrame(
            {
                "block": np.arange(-1, 6),
                "norm_index0": np.geomspace(1, 3000, 7),
                "median_norm_other": np.full(7, 50.0),
            }
        ),
        p,
        title=circuit.residual_title(
            {
                "creating_block": 2,
                "max_norm_ratio": 60.0,
                "max_norm_ratio_block": 5,
                "massive_coords": [138, 378, 447],
            }
        ),
    ),
    "shared_query_layers": lambda p: circuit.shared_query_layers(shared_frame(), (2, 5), p),
    "compare_figure": lambda p: compare.compare_figure(compare_result(), p),
    "tradeoff_figure": lambda p: compare.tradeoff_figure(tradeoff_frame(), LONG, p),
    "zoo_bars": lambda p: zoo.zoo_bars(zoo_result(), p),
    "zoo_scatter": lambda p: zoo.zoo_scatter(zoo_result(), p),
    "zoo_curves": lambda p: zoo.zoo_curves(zoo_curves(), p),
}


@pytest.mark.parametrize("name", list(FIGURES))
def test_figure_renders_without_clipping_overlap_or_covered_data(name, tmp_path, kept):
    path = tmp_path / f"{name}.png"
    FIGURES[name](path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(kept) == 1
    check_layout(kept[0])
    # the old fixed titles asserted the paper's findings whatever the data; titles now come from the numbers
    text = all_text(kept[0])
    assert not [c for c in CLAIMS if c in text]


CLAIMS = [
    "Keyprojectionsreadthemassive",
    "Querybiasalignswith",
    "EPEpredicts",
    "Massiveactivationsofthefirst",
    "Whereindex0becomesspecial",
    "Index0neverbecomesspecial",
    "Whichswitched-offcomponent",
]


def test_every_figure_function_is_checked():
    """A new figure function in report/ gets a case in FIGURES."""
    import inspect

    names = set()
    from sinkscope.report import circuit_explain, circuit_interventions

    for mod in (figures, circuit, circuit_explain, circuit_interventions, compare, zoo):
        for n, f in inspect.getmembers(mod, inspect.isfunction):
            if (
                f.__module__ == mod.__name__
                and "path" in inspect.signature(f).parameters
                and not n.startswith("_")
                and n != "save_figure"
            ):
                names.add(n)
    assert names <= {k.removesuffix("_full") for k in FIGURES}, names - {
        k.removesuffix("_full") for k in FIGURES
    }


def test_long_names_are_wrapped_whole_never_cut(tmp_path, kept):
    figures.domain_bars(measure_summary(), tmp_path / "a.png")
    figures.bos_heatmap(measure_result(), tmp_path / "b.png")
    labels = {
        k: f"an intervention with a long description that must wrap, not be cut ({k})" for k in "ab"
    }
    circuit.attention_grid({k: np.eye(4) for k in "ab"}, labels, [], tmp_path / "c.png")
    compare.compare_figure(compare_result(), tmp_path / "d.png")
    compare.tradeoff_figure(tradeoff_frame(), LONG, tmp_path / "e.png")
    for fig in kept[:2] + kept[3:]:
        assert _flat(LONG) in all_text(fig)
    assert _flat(LONG2) in all_text(kept[3])
    for k in "ab":
        assert _flat(labels[k]) in all_text(kept[2])
    assert _flat("a-dataset-with-a-long-name") in all_text(kept[0])


def test_values_above_1_stay_inside_the_axes(tmp_path, kept):
    figures.domain_bars(measure_summary(), tmp_path / "a.png")  # all: 0.97 + 2SE 0.06 > 1
    ax = kept[0].axes[0]
    assert ax.get_ylim()[1] >= 0.97 + 0.06
    compare.compare_figure(compare_result(), tmp_path / "b.png")  # percentages up to 180
    assert (
        kept[1].axes[1].get_ylim()[1] > max(compare_result().rows.filter(like="_pct").max()) * 0.99
    )
    circuit.shared_query_layers(shared_frame(), (2, 5), tmp_path / "c.png")
    assert kept[2].axes[0].get_ylim()[1] > 1.6


def test_probability_axes_keep_0_to_1_only_when_the_data_lie_in_it(tmp_path, kept):
    figures.layer_profile(measure_result(), measure_summary(), tmp_path / "a.png")
    assert kept[0].axes[0].get_ylim() == (0.0, 1.0)
    circuit.alignment_strip(
        np.clip(rng.standard_normal((2, 4, 10)) * 0.05, -1, 1), (2, 4), tmp_path / "b.png"
    )
    lo, hi = kept[1].axes[0].get_ylim()
    assert hi - lo < 1.0  # a cosine range from the data, not the fixed [-1, 1]


# --- titles from the data ------------------------------------------------------------------------


def test_gamma_title_states_what_the_values_show(tmp_path, kept):
    t = gamma_table(massive_scale=7.8)
    m, o = t.abs_gamma[t.massive].mean(), t.abs_gamma[~t.massive].mean()
    circuit.gamma_histograms(t, tmp_path / "a.png")
    title = kept[0].axes[0].get_title().replace("\n", " ")
    assert f"{m / o:.1f}x the other coordinates" in title and "[3, 9]" in title
    circuit.gamma_histograms(gamma_table(zero=True), tmp_path / "b.png")
    title = kept[1].axes[0].get_title().replace("\n", " ")
    assert "0 everywhere" in title and "no query bias" in title
    circuit.gamma_histograms(gamma_table(coords=()), tmp_path / "c.png")
    assert "no massive coordinates" in kept[2].axes[0].get_title().replace("\n", " ")
    for fig in kept:
        assert "read the massive" not in all_text(fig)
        check_layout(fig)


def test_alignment_title_with_zero_query_bias(tmp_path, kept):
    circuit.alignment_strip(np.full((3, 4, 10), np.nan), (2, 5), tmp_path / "a.png")
    assert "b_Q is zero" in kept[0].axes[0].get_title().replace("\n", " ")


def test_massive_coords_title_counts_what_passes(tmp_path, kept):
    circuit.massive_coords_plot(rng.standard_normal(50) * 0.1, [], 3.0, tmp_path / "a.png")
    assert "no coordinate of EPE_0 above mean + 3σ" in kept[0].axes[0].get_title().replace(
        "\n", " "
    )
    e = np.r_[rng.standard_normal(50) * 0.1, -7.0]
    circuit.massive_coords_plot(e, [50], 3.0, tmp_path / "b.png")
    title = kept[1].axes[0].get_title().replace("\n", " ")
    assert "1 coordinate of EPE_0 above mean + 3σ (50)" in title
    assert "50:-7" in all_text(kept[1])  # the signed value, never "-0"


def test_residual_title_from_the_profile():
    assert "never exceeds 5x" in circuit.residual_title(
        {"creating_block": None, "max_norm_ratio": 2.23, "max_norm_ratio_block": 5}
    )
    t = circuit.residual_title(
        {
            "creating_block": 1,
            "max_norm_ratio": 60.0,
            "max_norm_ratio_block": 5,
            "massive_coords": [138, 378],
        }
    )
    assert "from block 1" in t and "138, 378" in t and "60.0x" in t


def test_shares_above_1_are_explained_where_shown(tmp_path, kept):
    cap = circuit.shared_query_layers(shared_frame(above_1=True), (2, 5), tmp_path / "a.png")
    fig = kept[0]
    note = fig._supxlabel.get_text().replace("\n", " ") if fig._supxlabel else ""
    for text in (cap, note):
        assert "above 1" in text and "more logit advantage than the whole query" in text
        assert (
            "not meaningful (layer 0)" in text
        )  # layer 0: the whole query gives index 0 no advantage
    cap = circuit.shared_query_layers(shared_frame(above_1=False), (2, 5), tmp_path / "b.png")
    assert "above 1" not in cap and (
        kept[1]._supxlabel is None or "above 1" not in kept[1]._supxlabel.get_text()
    )


def test_shared_query_definition_allows_shares_above_1():
    """The note's reading matches analysis.shared_query: share = q̄·Σ R_iᵀc_i / Σ q_i·c_i, so a
    share above 1 means the position-specific rest of the query has a negative term."""
    import torch

    from sinkscope.analysis.shared_query import SharedQuery

    q_bar = torch.tensor([[[1.0, 0.0]]])
    contrast = torch.tensor([[[[2.0, 0.0]]]])  # shared advantage 2
    adv = torch.tensor([[[1.5]]])  # whole query 1.5: the rest contributes -0.5
    sq = SharedQuery(
        q_bar=q_bar,
        adv=adv,
        contrast=contrast,
        n_queries=torch.tensor([1.0]),
        b_Q=None,
        scale=torch.tensor([1.0]),
    )
    assert float(sq.share()[0, 0]) == pytest.approx(2 / 1.5)


# --- formats -------------------------------------------------------------------------------------

MAGIC = {"png": (b"\x89PNG\r\n\x1a\n",), "svg": (b"<?xml", b"<svg"), "pdf": (b"%PDF",)}


@pytest.mark.parametrize("fmt", FIGURE_FORMATS)
def test_save_figure_writes_the_suffixs_format_atomically(fmt, tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    p = figures.save_figure(fig, tmp_path / f"x.{fmt}")
    assert p == tmp_path / f"x.{fmt}" and p.read_bytes().lstrip()[:8].startswith(MAGIC[fmt])
    if fmt == "svg":
        assert b"<svg" in p.read_bytes()[:2000]
    names = sorted(f.name for f in tmp_path.iterdir())
    assert names == (
        ["x.pdf", "x.png"] if fmt == "pdf" else [f"x.{fmt}"]
    )  # no temp files left; a PDF has its PNG preview
    if fmt == "pdf":
        assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"
    assert not plt.fignum_exists(fig.number)


def test_save_figure_is_reproducible_for_svg_and_pdf(tmp_path):
    for fmt in ("svg", "pdf"):
        blobs = []
        for i in range(2):
            fig, ax = plt.subplots()
            ax.plot([0, 1], [0, 1])
            blobs.append(figures.save_figure(fig, tmp_path / f"{i}.{fmt}").read_bytes())
        assert blobs[0] == blobs[1]


def test_save_figure_refuses_an_unknown_suffix(tmp_path):
    fig, _ = plt.subplots()
    with pytest.raises(ValueError, match="suffix"):
        figures.save_figure(fig, tmp_path / "x.jpg")
    assert not plt.fignum_exists(fig.number) and not list(tmp_path.iterdir())


def test_figure_format_is_one_setting_for_the_run():
    from sinkscope.errors import SinkscopeError

    assert current_format() == "png" and figure_name("a") == "a.png"
    with figure_format("pdf"):
        assert figure_name("a") == "a.pdf"
        with figure_format(None):  # None leaves it
            assert current_format() == "pdf"
    assert current_format() == "png"
    with pytest.raises(SinkscopeError, match="png, svg, pdf"):
        with figure_format("jpeg"):
            pass


@pytest.mark.parametrize("fmt", FIGURE_FORMATS)
def test_measure_and_explain_figures_follow_the_format(fmt, tmp_path):
    res = measure_result("m")
    with figure_format(fmt):
        made = figures.measure_figures(res, measure_summary("m"), tmp_path)
    assert set(made) == {
        f"{s}.{fmt}" for s in ("bos_heatmap", "alpha_heatmap", "bos_by_domain", "bos_by_layer")
    }
    for name in made:
        assert (tmp_path / name).read_bytes().lstrip()[:8].startswith(MAGIC[fmt])
    ex = SimpleNamespace(
        data={"layer_band": [2, 5], "epe": {"massive_coords": [60]}},
        dataframes={"gamma": gamma_table()},
        arrays={"epe0": np.r_[rng.standard_normal(60) * 0.1, 3.0, rng.standard_normal(40) * 0.1]},
    )
    with figure_format(fmt):
        made = circuit.explain_figures(ex, tmp_path)
    assert set(made) == {
        f"fig4_gamma_hist.{fmt}",
        f"fig8_gamma_hist_full.{fmt}",
        f"fig7_massive_coords.{fmt}",
    }
    assert all((tmp_path / n).exists() for n in made)


def test_zoo_figures_follow_the_format(tmp_path, monkeypatch):
    import sinkscope.studies.zoo as ez

    monkeypatch.setattr(ez, "load_training_curves", lambda out: zoo_curves())
    with figure_format("svg"):
        paths = zoo.zoo_figures(zoo_result(), tmp_path)
    assert [p.name for p in paths] == ["zoo_sink.svg", "zoo_loss_vs_sink.svg", "zoo_training.svg"]


def test_report_embeds_png_svg_and_the_pdf_preview(tmp_path):
    from sinkscope.report.html import _img

    out = {}
    for fmt in FIGURE_FORMATS:
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        out[fmt] = _img(
            figures.save_figure(fig, tmp_path / f"f.{fmt}"), "alt text", href=f"stages/x/f.{fmt}"
        )
    assert 'src="data:image/png;base64,' in out["png"]
    assert 'src="data:image/svg+xml;base64,' in out["svg"]
    # a PDF: its PNG preview inline, and a link to the PDF itself
    assert 'src="data:image/png;base64,' in out["pdf"] and 'href="stages/x/f.pdf"' in out["pdf"]
    (tmp_path / "f.png").unlink()
    only_link = _img(tmp_path / "f.pdf", "alt", href="stages/x/f.pdf")
    assert "<img" not in only_link and 'href="stages/x/f.pdf"' in only_link
