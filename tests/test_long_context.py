"""benchmarks/long_context.py on a tiny random Llama: sinkscope's capture and HF eager
``output_attentions`` give the same BOS attention, the table has its columns, bad input is one
line with exit code 2. No timing assertions (the script prints its ratios). The cell in a child
process, as the script runs by default, is the ``slow`` test."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "long_context.py"


@pytest.fixture(scope="module")
def lc():
    spec = importlib.util.spec_from_file_location("long_context", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_methods_agree_in_process(lc):
    rows = lc.run(lc.TINY, [48, 32], list(lc.METHODS), domain="nl", isolate=False, progress=False)
    assert [(r["length"], r["method"]) for r in rows] == [
        (T, m) for T in (32, 48) for m in lc.METHODS
    ]
    assert all(r["status"] == "ok" for r in rows)
    for r in rows:
        if r["method"] == "sinkscope":
            assert r["max_abs_diff_vs_eager"] < 1e-6
            assert len(r["bos"]) == 3 and len(r["bos"][0]) == 4  # [layer, head] of the tiny Llama
        assert r["time_x_bare"] > 0 and r["peak_rss_gib"] > 0
    eager = {r["length"]: r["predicted_gib"] for r in rows if r["method"] == "eager"}
    sink = {r["length"]: r["predicted_gib"] for r in rows if r["method"] == "sinkscope"}
    assert eager[48] > eager[32] > sink[32]


def test_does_not_fit_is_recorded_not_run(lc):
    """A margin larger than the machine's memory: every cell is a 'does not fit' row, and a
    method that did not fit is not tried at longer lengths."""
    rows = lc.run(
        lc.TINY, [32, 64], ["eager"], domain="nl", isolate=False, margin_gib=1e6, progress=False
    )
    assert rows[0]["status"].startswith("does not fit: needs ") and "seconds" not in rows[0]
    assert rows[1]["status"] == "does not fit (did not at T=32)"


@pytest.mark.slow  # a second Python that imports torch and transformers: ~10 s idle, a minute on a busy machine
def test_child_process_and_csv(lc, tmp_path):
    """The script as run: a cell in its own process, the CSV with the documented columns."""
    out = tmp_path / "long.csv"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--model",
        "tiny",
        "--lengths",
        "40",
        "--methods",
        "sinkscope",
        "--domain",
        "nl",
        "--no-progress",
        "--out",
        str(out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(out.open()))
    assert tuple(rows[0]) == lc.COLUMNS
    assert [(x["length"], x["method"], x["status"]) for x in rows] == [("40", "sinkscope", "ok")]
    assert float(rows[0]["peak_rss_gib"]) >= float(rows[0]["activation_gib"]) >= 0
    assert float(rows[0]["process_peak_gib"]) >= float(rows[0]["peak_rss_gib"])
    assert f"wrote {out}" in r.stdout


def test_json_output(lc, tmp_path):
    out = tmp_path / "long.json"
    assert (
        lc.main(
            [
                "--quick",
                "--lengths",
                "16",
                "--methods",
                "bare,sinkscope",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    data = json.loads(out.read_text())
    assert data["settings"]["model"] == lc.TINY and [r["method"] for r in data["rows"]] == [
        "bare",
        "sinkscope",
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lengths", "1k"], "--lengths 1k is not a comma-separated list"),
        (["--lengths", "2"], "at least 4"),
        (["--methods", "eager,tlens"], "--methods tlens: choose from bare,sinkscope,eager"),
        (["--out", "table.txt"], "must end in .csv or .json"),
        (["--out", "/nonexistent/dir/t.csv"], "does not exist or is not writable"),
        (["--domain", "poetry"], "--domain poetry: choose from"),
        (["--repeats", "two"], "invalid int value"),
    ],
)
def test_bad_input_is_one_line_exit_2(lc, args, message, capsys):
    assert lc.main(["--quick", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_domain_too_short_is_one_line(lc, capsys):
    """nl has a few tens of thousands of tokens: a longer T is a one-line error, not a crash."""
    assert (
        lc.main(
            [
                "--quick",
                "--domain",
                "nl",
                "--lengths",
                "100000",
                "--methods",
                "bare",
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--domain nl has" in err and "fewer than T=100000" in err and err.count("\n") == 1
