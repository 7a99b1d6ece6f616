"""The report's words agree with its tables (issue 25): the readings quote the tables' numbers at
the tables' precision (never a "-0"), an all-layer number is labelled with every layer, a reading
says the sink *moves* only where attention to index 1 takes what index 0 lost, and a rerun sweep
says how many cells it reused. Every check reads what the stages computed on the embedded default
model (a few inputs), not hand-made numbers, except where a branch needs numbers the default
model does not produce (the sink really moving)."""

from __future__ import annotations

import json
import re

import pytest

import sinkscope
from sinkscope.cli import main
from sinkscope.report import readings, sections
from sinkscope.report.paper import paper_vs_run
from sinkscope.report.records import Cell, InterventionsRecord, read_record

NEG_ZERO = re.compile(r"(?<![\w.])[-−]0(?:\.0+)?(?![\d.])")  # "-0", "-0.0", "-0.000"
FEW = dict(per_domain=2, progress=False)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def intervene_result():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return sinkscope.intervene("default", "default", **FEW)


def _table_cells(html: str) -> list[list[str]]:
    """The rows of the first HTML table in ``html``, as the text of their cells."""
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [re.findall(r"<td[^>]*>(.*?)</td>", tr) for tr in body.split("</tr>") if "<td" in tr]


# --- 1: the EPE reading quotes the table's values ------------------------------------------------


def test_epe_reading_quotes_the_massive_coordinates_as_the_table_shows_them():
    r = sinkscope.explain("default", "default", forward=False, **FEW)
    rec = read_record("circuit_weights", r.summary())
    e = rec.epe
    assert e is not None and e.massive_coords, "the embedded model's EPE_0 has massive coordinates"
    html = sections.circuit_weights_section(rec)
    shown = {
        row[0]: row[1] for row in _table_cells(html.split("Massive coordinates of EPE_0", 1)[1])
    }
    assert sorted(map(int, shown)) == sorted(e.massive_coords)
    # the table's value is the raw value at one decimal (an independent formatting)
    for c, v in zip(e.massive_coords, e.massive_values):
        assert float(shown[str(c)]) == pytest.approx(v, abs=0.05)
    text = sections.circuit_weights_reading(rec)
    for c in e.massive_coords:
        assert f"{c} ({shown[str(c)]})" in text, (c, shown[str(c)], text)
    n = len(e.massive_coords)
    assert f"has {n} massive coordinate{'s' if n != 1 else ''} by" in text
    assert not NEG_ZERO.search(text), text
    # the norms are told apart as the numbers are: 2.0 vs 0.71, not "2 against 1"
    norms = re.search(r"norm is ([\d.]+) against a median of ([\d.]+)", text)
    assert float(norms[1]) == pytest.approx(e.norm_index0, rel=0.05)
    assert float(norms[2]) == pytest.approx(e.median_norm_other, rel=0.05)


def test_a_negative_value_that_rounds_to_zero_prints_without_a_sign(intervene_result):
    """The Δ CE of the raw-position swap (e) is a tiny number of either sign; the table and the
    readings print it as +0.000 / the table's digits, never -0.000."""
    rec = read_record("intervene", intervene_result.summary())
    html = sections.interventions_section(rec)
    assert not NEG_ZERO.search(re.sub(r"<[^>]+>", " ", html))
    assert not NEG_ZERO.search(readings.interventions_reading(rec))
    from sinkscope.report.tables import fmt

    assert (fmt(-0.0004, "+.3f"), fmt(-0.4, ".0f"), fmt(-0.04, ".1f")) == ("+0.000", "0", "0.0")
    assert fmt(-0.0006, "+.3f") == "-0.001"


# --- 2: the all-layer rows say all layers ----------------------------------------------------------


def test_all_layer_rows_are_labelled_with_every_layer(intervene_result):
    m = sinkscope.measure("default", "default", **FEW)
    records = {
        "measure": read_record("measure", m.summary()),
        "interventions": read_record("intervene", intervene_result.summary()),
    }
    per_layer = records["measure"].bos_attention_per_layer["all"]
    band = records["measure"].band_text
    assert len(per_layer) > records["measure"].layer_band[1] - records["measure"].layer_band[0]
    df = paper_vs_run(records, gpt2_small=False, paper_inputs=False).set_index("quantity")
    row = df.loc["all-layer baseline"]
    # the number is the mean over every layer (the per-layer means, equal counts) ...
    assert float(row["this run"]) == pytest.approx(sum(per_layer) / len(per_layer), abs=1e-3)
    # ... and its setting says so, not the band's layers
    want = f"all {len(per_layer)} layers"
    assert want in row["this run's setting"] and f"layers {band}" not in row["this run's setting"]
    for q in ("(b) all-layer variant: % of baseline", "(d) all-layer variant: % of baseline"):
        assert want in df.loc[q, "this run's setting"], q
    assert (
        f"layers {band}" in df.loc["BOS attention (layer band, all inputs)", "this run's setting"]
    )
    html = sections.interventions_section(records["interventions"])
    assert f"All-layer variant: BOS attention, {want}" in html


# --- 3: a reading says "moves" only where index 1 takes the mass --------------------------------


def _clauses(text: str) -> dict[str, str]:
    """Each "(x) ..." clause of a reading, up to the next "(y)" or sentence end."""
    return {
        m[1]: m[2]
        for m in re.finditer(r"\(([a-j])\)(.*?)(?=\([a-j]\)|\.(?:\s|$)|$)", text)
        if m[2].strip()
    }


def _moves(clause: str) -> bool:
    return bool(re.search(r"\bmoves?\b", clause)) and not re.search(
        r"not move|without moving", clause
    )


def test_interventions_reading_says_moves_only_when_index_1_gains(intervene_result):
    t = intervene_result.table().query("scope == 'mid' and dataset == 'all'")
    t = t.set_index("intervention")
    base1 = t.loc["a", "attn_to_1"]
    rec = read_record("intervene", intervene_result.summary())
    text = readings.interventions_reading(rec)
    # on the default model (f) lowers the sink a lot and index 1 gets no more than before:
    # the control is called out, and not as moving the sink
    f = t.loc["f"]
    assert f.pct_baseline < 90 and f.attn_to_1 < 1.5 * base1, "the case this test is about"
    assert "(f)" in text and "not neutral" in text
    clauses = _clauses(text)
    assert not _moves(clauses["f"]), clauses["f"]
    assert f"{f.pct_baseline:.1f}%" in clauses["f"] and f"{f.attn_to_1:.3f}" in clauses["f"]
    for rid, clause in clauses.items():
        if _moves(clause):  # index 1 at least doubles and takes half of what index 0 lost
            r = t.loc[rid]
            lost = t.loc["a", "mean"] - r["mean"]
            assert r.attn_to_1 >= 2 * base1 and r.attn_to_1 - base1 >= 0.5 * lost, (rid, clause)
    # the strongest intervention's sentence quotes its table row
    k = t.drop("a").pct_baseline.idxmin()
    assert f"({k})" in text and f"{t.loc[k, 'pct_baseline']:.1f}%" in text
    assert "removes most of the sink" not in text


def _record(cells: dict[str, Cell]) -> InterventionsRecord:
    return InterventionsRecord(layer_band=[2, 6], table1={"mid": {"all": cells}})


def test_a_sink_that_does_go_to_index_1_is_said_to_move(intervene_result):
    """The real table with index 1 given what index 0 lost under (d) and (f) (the default model's
    sink never moves, so the numbers are shifted from its own)."""
    rec = read_record("intervene", intervene_result.summary())
    real = rec.table1["mid"]["all"]
    base = real["a"]
    moved = {
        k: Cell(
            real[k].description,
            True,
            mean=0.2 * base.mean,
            pct=20.0,
            attn_to_1=base.attn_to_1 + 0.7 * base.mean,
            delta_ce=real[k].delta_ce,
        )
        for k in "df"
    }
    text = readings.interventions_reading(_record(real | moved))
    clauses = _clauses(text)
    assert "the sink moves with the EPE" in text
    assert _moves(clauses["f"]) and "index 1" in clauses["f"]
    assert f"{base.attn_to_1 + 0.7 * base.mean:.3f}" in clauses["f"]
    # and with index 1 unchanged the same drop is a reduction, not a move
    kept1 = {k: Cell(**{**vars(c), "attn_to_1": base.attn_to_1}) for k, c in moved.items()}
    text = readings.interventions_reading(_record(real | kept1))
    assert "moves" not in text and "the sink shrinks but does not move to index 1" in text


# --- 4: a rerun sweep says how many cells it reused --------------------------------------------


def test_sweep_reports_cached_and_computed_cells(tmp_path, capsys):
    out = tmp_path / "s"
    grid = ["--models", "default", "--per-domain", "2", "--preset", "none", "--quiet"]
    grid += ["--no-figures", "--out", str(out)]

    def run(seeds: str) -> tuple[str, dict]:
        capsys.readouterr()
        assert main(["sweep", *grid, "--seeds", seeds]) == 0
        return capsys.readouterr().out, json.loads((out / "sweep.json").read_text())

    text, s = run("0,1")
    assert "2 cells: 0 cached, 2 computed" in text
    assert (s["cells"], s["cells_cached"], s["cells_computed"]) == (2, 0, 2)
    assert len(list((out / "cells").glob("*.json"))) == 2
    md = (out / "table1_models.md").read_text()
    text, s = run("0,1")
    assert "2 cells: 2 cached, 0 computed" in text
    assert (s["cells"], s["cells_cached"], s["cells_computed"]) == (2, 2, 0)
    assert (out / "table1_models.md").read_text() == md  # the table file does not change
    text, s = run("0,1,2")
    assert "3 cells: 2 cached, 1 computed" in text
    assert (s["cells_cached"], s["cells_computed"]) == (2, 1)
    assert len(list((out / "cells").glob("*.json"))) == 3
