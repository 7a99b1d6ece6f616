"""How a model is loaded (issue 14): ``--dtype``, ``--device-map``, hub revisions
(``ORG/NAME@REVISION``), and what every summary records about the load. Numbers are checked
against HF eager attention run independently on the same token ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import HUB_REVISION

from sinkscope import load_model
from sinkscope.cli import main

MEASURE = ["--inputs", "default", "--per-domain", "2", "--quiet", "--no-figures"]


def _measure(model, out: Path, *extra) -> dict:
    assert main(["measure", "--model", str(model), *MEASURE, "--out", str(out), *extra]) == 0
    return json.loads((out / "summary.json").read_text())


def _bos(out: Path) -> np.ndarray:
    """``metrics.csv``'s bos_attention as [example, layer, head]."""
    m = pd.read_csv(out / "metrics.csv").sort_values(["example", "layer", "head"])
    return m.bos_attention.to_numpy().reshape(
        m.example.nunique(), m.layer.nunique(), m["head"].nunique()
    )


def _eager_bos(model_dir: Path, out: Path) -> np.ndarray:
    """The same quantity from HF eager attention in float32, on the token ids ``inputs.jsonl`` lists:
    attention from the second-half queries to key 0, per example, layer and head."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(
        model_dir, attn_implementation="eager", dtype=torch.float32
    ).eval()
    rows = [json.loads(line) for line in (out / "inputs.jsonl").read_text().splitlines()]
    ids = torch.tensor([r["token_ids"] for r in sorted(rows, key=lambda r: r["example"])])
    with torch.no_grad():
        att = torch.stack(
            hf(ids, output_attentions=True).attentions, 1
        )  # [example, layer, head, q, k]
    T = ids.shape[1]
    return att[:, :, :, T // 2 :, 0].mean(-1).numpy()


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 2e-2), ("float16", 2e-2)])
def test_dtype_is_honoured_recorded_and_close_to_fp32_eager(
    dtype, tol, tiny_gpt2_dir, tmp_path, capsys
):
    """The weights are loaded in ``--dtype`` (every floating parameter), ``summary.json`` and the
    printed load line say so, and BOS attention stays within ``tol`` of float32 HF eager (float16
    runs on the CPU with torch >= 2.3)."""
    out = tmp_path / dtype
    s = _measure(tiny_gpt2_dir, out, "--dtype", dtype)
    assert s["dtype"] == dtype and s["device_map"] is None and s["devices"] == ["cpu"]
    assert f"loaded tiny-gpt2: {dtype} on cpu" in capsys.readouterr().out
    m = load_model(str(tiny_gpt2_dir), dtype=dtype)
    assert {p.dtype for p in m.hf.parameters()} == {getattr(torch, dtype)}
    diff = np.abs(_bos(out) - _eager_bos(tiny_gpt2_dir, out)).max()
    assert diff < tol, diff
    if dtype != "float32":
        assert diff > 0  # the run really was in reduced precision


def _bf16_copy(tiny_gpt2_dir: Path, tmp_path: Path) -> Path:
    """The tiny model saved in bfloat16 (its config.json says ``"dtype": "bfloat16"``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = tmp_path / "tiny-bf16"
    AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir, dtype=torch.bfloat16).save_pretrained(d)
    AutoTokenizer.from_pretrained(tiny_gpt2_dir).save_pretrained(d)
    assert json.loads((d / "config.json").read_text())["dtype"] == "bfloat16"
    return d


def test_auto_is_the_checkpoints_dtype_and_float32_elsewhere(tiny_gpt2_dir, tmp_path):
    """``auto``: a HF directory's own dtype; float32 for the embedded model and a partial
    checkpoint (even one stored in bfloat16); an explicit dtype wins."""
    from safetensors.torch import save_file

    bf16 = _bf16_copy(tiny_gpt2_dir, tmp_path)
    assert load_model(str(bf16)).dtype == torch.bfloat16
    assert load_model(str(bf16), dtype="float32").dtype == torch.float32
    assert load_model(str(tiny_gpt2_dir)).dtype == torch.float32
    assert load_model().record()["dtype"] == "float32"
    part = tmp_path / "partial"
    part.mkdir()
    (part / "config.json").write_text((bf16 / "config.json").read_text())
    save_file(
        {"transformer.wpe.weight": torch.randn(128, 64, dtype=torch.bfloat16)},
        str(part / "w.safetensors"),
    )
    m = load_model(str(part / "w.safetensors"))
    assert (
        m.partial
        and m.dtype == torch.float32
        and m.hf.transformer.wpe.weight.dtype == torch.float32
    )


def test_the_papers_runs_stay_float32_unless_dtype_is_given(tiny_gpt2_dir, tmp_path):
    """On a bfloat16 checkpoint: measure follows the checkpoint, ``intervene --preset paper`` and
    ``reproduce`` load float32 (recorded in summary.json / run.json and every stage's summary), and
    an explicit ``--dtype`` is honoured by all."""
    bf16 = _bf16_copy(tiny_gpt2_dir, tmp_path)
    assert _measure(bf16, tmp_path / "m")["dtype"] == "bfloat16"
    iv = ["intervene", "--model", str(bf16), *MEASURE, "--preset", "paper"]
    assert main([*iv, "--out", str(tmp_path / "i")]) == 0
    assert json.loads((tmp_path / "i" / "summary.json").read_text())["dtype"] == "float32"
    assert main([*iv, "--out", str(tmp_path / "i16"), "--dtype", "bfloat16"]) == 0
    assert json.loads((tmp_path / "i16" / "summary.json").read_text())["dtype"] == "bfloat16"
    assert (
        main(
            [
                "intervene",
                "--model",
                str(bf16),
                *MEASURE,
                "--preset",
                "none",
                "--edit",
                "x=bq:0",
                "--out",
                str(tmp_path / "n"),
            ]
        )
        == 0
    )
    assert (
        json.loads((tmp_path / "n" / "summary.json").read_text())["dtype"] == "bfloat16"
    )  # not the paper's preset
    skip = "circuit_weights,circuit_forward,interventions,shared_query,mitigate"
    for extra, want in (([], "float32"), (["--dtype", "bfloat16"], "bfloat16")):
        out = tmp_path / f"r{want}"
        assert (
            main(
                [
                    "reproduce",
                    "--model",
                    str(bf16),
                    *MEASURE[:-1],
                    "--skip",
                    skip,
                    "--out",
                    str(out),
                    *extra,
                ]
            )
            == 0
        )  # no --no-figures
        assert json.loads((out / "run.json").read_text())["dtype"] == want
        assert (
            json.loads((out / "stages" / "measure" / "summary.json").read_text())["dtype"] == want
        )


def test_sweep_loads_in_the_run_dtype_and_records_it(tiny_gpt2_dir, tmp_path):
    """``sweep`` follows the same rule: ``--preset paper`` loads float32 unless ``--dtype`` is given,
    ``--preset none`` the checkpoint's own; ``sweep.json`` records each model's load, and the
    dtype is part of every cell's key (a bf16 sweep never reuses float32 cells)."""
    bf16 = _bf16_copy(tiny_gpt2_dir, tmp_path)
    grid = ["sweep", "--models", str(bf16), "--per-domain", "1", "--quiet", "--no-figures"]
    for extra, want in (
        (["--preset", "none"], "bfloat16"),
        (["--preset", "none", "--dtype", "float32"], "float32"),
        (["--preset", "paper"], "float32"),
    ):
        out = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
        assert main([*grid, *extra, "--out", str(out)]) == 0
        s = json.loads((out / "sweep.json").read_text())
        assert s["dtype"] == {str(bf16): want} and s["model_source"][str(bf16)]["kind"] == "hf", (
            extra,
            s["dtype"],
        )
    out = tmp_path / "both"
    for dtype in ("float32", "bfloat16"):
        assert main([*grid, "--preset", "none", "--dtype", dtype, "--out", str(out)]) == 0
    assert len(list((out / "cells").glob("*.json"))) == 2


def test_multi_model_outputs_record_each_model(tiny_gpt2_dir, tmp_path):
    """``mitigate`` / ``compare`` results combine models: their JSON keys the load record by model."""
    out = tmp_path / "mit"
    assert (
        main(
            [
                "mitigate",
                "--models",
                f"{tiny_gpt2_dir},default",
                *MEASURE,
                "--strengths",
                "1,0",
                "--edits",
                "bq",
                "--dtype",
                "bfloat16",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    s = json.loads((out / "mitigate.json").read_text())
    names = s["models"]
    assert len(names) == 2 and s["dtype"] == {n: "bfloat16" for n in names}
    assert s["model_source"][names[0]] == {"kind": "hf", "spec": str(tiny_gpt2_dir)}


def test_device_map_auto_on_cpu_gives_the_plain_numbers(tiny_gpt2_dir, tmp_path):
    """accelerate's placement (here: all on the CPU) computes exactly what the plain load does."""
    plain = _measure(tiny_gpt2_dir, tmp_path / "plain")
    mapped = _measure(tiny_gpt2_dir, tmp_path / "mapped", "--device-map", "auto", "--device", "cpu")
    assert (
        mapped["device_map"] == "auto"
        and plain["device_map"] is None
        and mapped["devices"] == ["cpu"]
    )
    assert (tmp_path / "plain" / "metrics.csv").read_bytes() == (
        tmp_path / "mapped" / "metrics.csv"
    ).read_bytes()


# ---- hub revisions, offline: the pre-filled hub cache of conftest.hub_home --------------------------


def _sinkscope(hub_home: Path, *argv) -> subprocess.CompletedProcess:
    """The CLI in a child process (the hub cache location is read when huggingface_hub is imported)."""
    env = dict(os.environ, HF_HOME=str(hub_home), HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "sinkscope", *map(str, argv)],
        env=env,
        capture_output=True,
        text=True,
    )


def test_a_hub_revision_loads_that_snapshot_and_is_recorded(hub_home, tmp_path):
    """``gpt2@step1000`` reads the snapshot its ref names (other weights: other numbers), equal to
    HF eager on that snapshot; the revision and its commit are in summary.json and the load line."""
    repo = hub_home / "hub" / "models--gpt2"
    commit = (repo / "refs" / HUB_REVISION).read_text()
    assert commit != (repo / "refs" / "main").read_text()
    for spec, out in (("gpt2", "main"), (f"gpt2@{HUB_REVISION}", "rev")):
        r = _sinkscope(hub_home, "measure", "--model", spec, *MEASURE, "--out", tmp_path / out)
        assert r.returncode == 0, r.stderr
    assert f"loaded gpt2@{HUB_REVISION} (commit {commit[:12]}): float32 on cpu" in r.stdout
    s = json.loads((tmp_path / "rev" / "summary.json").read_text())
    assert s["model"] == f"gpt2@{HUB_REVISION}"
    assert s["model_source"] == {
        "kind": "hf",
        "spec": "gpt2",
        "revision": HUB_REVISION,
        "commit": commit,
    }
    rev, main_ = _bos(tmp_path / "rev"), _bos(tmp_path / "main")
    assert np.abs(rev - _eager_bos(repo / "snapshots" / commit, tmp_path / "rev")).max() < 1e-5
    assert np.abs(rev - main_).max() > 1e-3
    assert (
        json.loads((tmp_path / "main" / "summary.json").read_text())["model_source"]["revision"]
        is None
    )


def test_a_missing_revision_is_one_line(hub_home, tmp_path):
    out = tmp_path / "out"
    r = _sinkscope(hub_home, "measure", "--model", "gpt2@no-such-branch", *MEASURE, "--out", out)
    assert r.returncode == 2 and r.stdout == "", (r.returncode, r.stdout)
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith(
        "sinkscope: error: could not load revision 'no-such-branch' of 'gpt2'"
    ), line
    assert "drop @REVISION" in line and not out.exists()
