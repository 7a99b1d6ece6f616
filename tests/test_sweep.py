"""``sinkscope sweep``: the grid, content regimes, lengths, caching, Table 1 across models, and
the Ray backend against the local one."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import torch

from sinkscope.cli import main
from sinkscope.data.content import lengthen, resample, synthetic_inputs
from sinkscope.data.inputs import Example
from sinkscope.studies.sweep import SWEEP_COLUMNS, TABLE1_COLUMNS, training_step

GRID = [
    "--models",
    "default",
    "--lengths",
    "40,64",
    "--content",
    "natural,random,repeated",
    "--seeds",
    "0,1",
    "--per-domain",
    "2",
    "--preset",
    "paper",
    "--quiet",
    "--no-figures",
]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "local"
    assert main(["sweep", *GRID, "--out", str(out)]) == 0
    return out


def test_output_contract(local_sweep):
    s = pd.read_csv(local_sweep / "sweep.csv")
    assert list(s.columns) == SWEEP_COLUMNS
    assert (
        set(s.length) == {40, 64}
        and set(s.content) == {"natural", "random", "repeated"}
        and set(s.seed) == {0, 1}
    )
    assert (
        set(s.intervention) == set("abcdefghij")
        and s[s.intervention == "a"].description.eq("baseline").all()
    )
    assert set(s[s.content == "natural"].domain) == {"all", "nl", "math", "code"}
    assert set(s[s.content == "random"].domain) == {"all", "random"}
    base = s[(s.intervention == "a")]
    assert np.allclose(base.pct_baseline, 100) and (base.n > 0).all()
    t = pd.read_csv(local_sweep / "table1_models.csv")
    assert list(t.columns) == TABLE1_COLUMNS


def test_baseline_cell_equals_measure(local_sweep, tmp_path):
    """The (40 tokens, natural, seed 0) baseline is what ``sinkscope measure`` gives on the same
    inputs (an independent code path: measure's capture and summary, not the interventions')."""
    out = tmp_path / "m"
    assert main(["measure", "--per-domain", "2", "--out", str(out), "--quiet", "--no-figures"]) == 0
    m = json.loads((out / "summary.json").read_text())["bos_attention"]
    s = pd.read_csv(local_sweep / "sweep.csv")
    cell = s[
        (s.length == 40) & (s.content == "natural") & (s.seed == 0) & (s.intervention == "a")
    ].set_index("domain")
    for dom in ("all", "nl", "math", "code"):
        assert abs(cell.loc[dom, "bos_attention"] - m[dom]["mean"]) < 1e-6, dom


def test_table1_is_the_mean_and_sd_over_seeds(local_sweep):
    s = pd.read_csv(local_sweep / "sweep.csv")
    t = pd.read_csv(local_sweep / "table1_models.csv").set_index(["intervention", "domain"])
    cells = s[(s.length == 40) & (s.content == "natural")]
    for (iv, dom), g in cells.groupby(["intervention", "domain"]):
        vals = g.sort_values("seed").bos_attention.to_numpy()
        assert abs(t.loc[(iv, dom), "mean"] - vals.mean()) < 1e-6
        assert abs(t.loc[(iv, dom), "sd_seeds"] - np.std(vals, ddof=1)) < 1e-6
    a = t.xs("a", level="intervention")["mean"]
    for (iv, dom), r in t.iterrows():
        assert abs(r.pct_baseline - 100 * r["mean"] / a[dom]) < 1e-3


def test_cells_are_cached_and_never_recomputed(local_sweep, monkeypatch):
    import sinkscope.studies.sweep as sw

    before = (local_sweep / "sweep.csv").read_bytes()
    monkeypatch.setattr(sw, "run_cell", lambda *a, **k: pytest.fail("a cached cell was recomputed"))
    assert main(["sweep", *GRID, "--out", str(local_sweep)]) == 0
    assert (local_sweep / "sweep.csv").read_bytes() == before


def test_lengths_beyond_learned_positions_are_recorded_not_failed(tmp_path):
    out = tmp_path / "s"
    assert (
        main(
            [
                "sweep",
                "--lengths",
                "40,128",
                "--per-domain",
                "1",
                "--preset",
                "none",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    s = pd.read_csv(out / "sweep.csv")
    long = s[s.length == 128]
    assert (
        len(long) == 1
        and not long.applicable.iloc[0]
        and "64 learned positions" in long.reason.iloc[0]
    )
    assert (out / "report.html").exists() and (out / "sink_vs_length.png").exists()


def test_content_regimes(gpt2_tokenizer):
    ti = synthetic_inputs("random", gpt2_tokenizer, n=50, length=30, seed=3, vocab=50257)
    assert ti.ids.shape == (50, 30) and not set(ti.ids.flatten().tolist()) & set(
        gpt2_tokenizer.all_special_ids
    )
    again = synthetic_inputs("random", gpt2_tokenizer, n=50, length=30, seed=3, vocab=50257)
    assert torch.equal(ti.ids, again.ids)  # a seed is a fixed draw
    assert not torch.equal(
        ti.ids, synthetic_inputs("random", gpt2_tokenizer, n=50, length=30, seed=4, vocab=50257).ids
    )
    rep = synthetic_inputs(
        "repeated", gpt2_tokenizer, n=4, length=21, seed=0, vocab=50257, bos=True
    )
    body = rep.ids[:, 1:]
    assert (rep.ids[:, 0] == gpt2_tokenizer.bos_token_id).all() and torch.equal(
        body[:, :10], body[:, 10:]
    )


def test_lengthen_joins_short_texts_within_a_domain(gpt2_tokenizer):
    ex = [
        Example("one two three", "a"),
        Example("a long enough text of many many many words here", "b"),
        Example("four five six", "a"),
        Example("seven eight nine ten", "a"),
    ]
    out = lengthen(ex, gpt2_tokenizer, 8)
    assert [e.domain for e in out] == ["b", "a"]
    assert (
        out[1].text == "one two three\n\nfour five six\n\nseven eight nine ten"
        and out[1].meta["joined"] == 3
    )
    assert resample(ex, 0) == ex and sorted(resample(ex, 5), key=id) == sorted(ex, key=id)


def test_training_step_from_the_spec():
    assert training_step("EleutherAI/pythia-70m@step1000") == 1000
    assert training_step("runs/x/checkpoints/step-000400") == 400
    assert training_step("gpt2") is None and training_step("packaged:smollm2") is None


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--lengths", "40,x"], "--lengths 40,x is not a comma-separated list"),
        (["--content", "natural,noise"], "--content natural,noise"),
        (["--seeds", "0,0"], "repeats a value"),
        (["--models", "default,default"], "names a model twice"),
        (["--address", "ray://x:1"], "use it with --backend ray"),
    ],
)
def test_bad_sweep_options(argv, fragment, tmp_path, capsys):
    rc = main(["sweep", "--out", str(tmp_path / "o"), "--quiet", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="ray is not installed (pip install 'sinkscope[ray]')",
)
def test_ray_backend_matches_local_and_retries_a_killed_task(local_sweep, tmp_path, monkeypatch):
    """A local Ray instance: one task per model; the first task kills its own worker process
    mid-run (SINKSCOPE_SWEEP_DIE_ONCE), Ray retries it, and sweep.csv is byte-identical to the
    local backend's."""
    import ray

    marker = tmp_path / "died"
    monkeypatch.setenv("SINKSCOPE_SWEEP_DIE_ONCE", str(marker))
    out = tmp_path / "ray"
    try:
        assert main(["sweep", *GRID, "--backend", "ray", "--out", str(out)]) == 0
    finally:
        ray.shutdown()
    assert marker.exists()  # the first attempt died
    assert (out / "sweep.csv").read_bytes() == (local_sweep / "sweep.csv").read_bytes()
    assert (out / "table1_models.csv").read_bytes() == (
        local_sweep / "table1_models.csv"
    ).read_bytes()


def test_a_cell_is_the_intervene_stage(tmp_path, monkeypatch):
    """A natural 40-token cell of the default model is `sinkscope intervene --preset paper` on the
    same inputs: the same Table 1 numbers, row for row (both printed to 6-7 digits)."""
    import pandas as pd

    from sinkscope.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    q = ["--per-domain", "3", "--quiet", "--no-figures"]
    assert main(["sweep", "--models", "default", "--out", str(tmp_path / "s"), *q]) == 0
    assert main(["intervene", "--preset", "paper", "--out", str(tmp_path / "i"), *q]) == 0
    sweep = pd.read_csv(tmp_path / "s" / "sweep.csv")
    t1 = pd.read_csv(tmp_path / "i" / "table1.csv").query("scope == 'mid'")
    got = sweep.set_index(["domain", "intervention"]).sort_index()
    want = t1.set_index(["dataset", "intervention"]).sort_index()
    assert list(got.index) == list(want.index)
    for g, w in (("bos_attention", "mean"), ("se", "se"), ("pct_baseline", "pct_baseline"),
                 ("attn_to_1", "attn_to_1"), ("delta_ce", "delta_ce"), ("n", "n")):  # fmt: skip
        diff = (got[g].to_numpy(float) - want[w].to_numpy(float)).__abs__()
        assert diff.max() <= 1e-5 * (1 + want[w].abs().max()), (g, diff.max())
