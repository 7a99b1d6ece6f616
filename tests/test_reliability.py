"""The reliability audit, case by case (tiny models, in-process unless a real signal is needed):
no file's code ever runs, nothing sinkscope did not create is deleted, no NaN table, every user
error is one ``sinkscope: error:`` line with exit code 2 and no output, concurrent runs do not
break each other, and killed runs leave nothing that a later run does not clean up."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import default_sigint_in_child

from sinkscope.cli import main
from sinkscope.errors import SinkscopeError
from sinkscope.io import MARKER, TMP_MARKER, mark


class Payload:
    """Unpickling this runs ``touch PATH`` (what a crafted checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path: Path, marker: Path, **extra) -> Path:
    """A torch pickle at ``path`` whose loading with ``weights_only=False`` creates ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": Payload(marker), "optimizer": {}, "step": 1, "history": {}, **extra}, path)
    return path


RECORDS: list[tuple[str, str, int, str]] = []  # (case, command, exit code, stderr line)


@pytest.fixture(scope="module", autouse=True)
def case_table():
    """``SINKSCOPE_RELIABILITY_TABLE=FILE pytest tests/test_reliability.py`` writes the table of
    cases (case, command, exit code, stderr line) that these tests ran."""
    yield
    path = os.environ.get("SINKSCOPE_RELIABILITY_TABLE")
    if path:
        rows = ["| case | command | exit | stderr |", "|---|---|---|---|"]
        for case, cmd, rc, line in RECORDS:
            rows.append(f"| {case} | `{cmd}` | {rc} | {line.replace('|', '/')} |")
        Path(path).write_text("\n".join(rows) + "\n")


def user_error(capsys, argv, *fragments, out: Path | None = None) -> str:
    """Run the CLI; assert exit 2, one stderr line ``sinkscope: error: ...`` holding every
    fragment, and no output directory; return that line."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    case = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]
    short = " ".join(
        str(a).split("/")[0] + Path(a).name if "/" in str(a) else str(a) for a in argv
    )  # paths by their last part
    RECORDS.append((case, f"sinkscope {short}", rc, err.splitlines()[0] if err else ""))
    assert rc == 2, (rc, err)
    assert (
        len(err.splitlines()) == 1
        and err.startswith("sinkscope: error:")
        and "Traceback" not in err
    ), err
    for f in fragments:
        assert f in err, (f, err)
    if out is not None:
        assert not out.exists(), f"{out} was written"
        assert not list(out.parent.glob(f".{out.name}.tmp-*")), "temp directory left"
    return err


@pytest.fixture
def text_file(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text(
        "\n".join(
            f"line {i}: " + "the river runs past the mill and the town " * 6 for i in range(4)
        )
        + "\n"
    )
    return f


def _measure(model, text_file, out, *extra, cmd: str = "measure"):
    return [
        cmd,
        "--model",
        model,
        "--inputs",
        f"text:{text_file}",
        "--out",
        out,
        "--quiet",
        "--no-figures",
        "--max-tokens",
        "24",
        *extra,
    ]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---- 1. no code from any file runs ------------------------------------------------------------


def test_crafted_checkpoint_is_never_unpickled_by_train_resume(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    run = tmp_path / "run"
    run.mkdir()
    mark(run, "train")
    plant(run / "checkpoint.pt", marker)
    user_error(
        capsys,
        [
            "train",
            "--out",
            run,
            "--resume",
            "--quiet",
            "--layers",
            "1",
            "--width",
            "16",
            "--heads",
            "2",
            "--steps",
            "2",
        ],
        "checkpoint.pt",
        "nothing in it was run",
    )
    assert not marker.exists()


def test_crafted_checkpoint_in_a_zoo_run_is_never_unpickled(tmp_path, monkeypatch):
    """``zoo`` resumes a run directory that has ``checkpoint.pt`` but no ``training.json``."""
    from sinkscope.studies.zoo import run_zoo
    from sinkscope.training import TrainConfig
    from sinkscope.training.recipe import tiny_texts

    marker = tmp_path / "PWNED"
    zoo = tmp_path / "zoo"
    (zoo / "full-s0").mkdir(parents=True)
    mark(zoo, "zoo")
    mark(zoo / "full-s0", "train")
    plant(zoo / "full-s0" / "checkpoint.pt", marker)
    base = TrainConfig(
        n_layer=1, n_embd=16, n_head=2, context=40, batch=2, steps=2, vocab=300, eval_every=0
    )
    monkeypatch.setattr("sinkscope.training.training_texts", lambda spec: tiny_texts())
    with pytest.raises(SinkscopeError, match="nothing in it was run"):
        run_zoo(zoo, seeds=(0,), variants=("full",), base=base, progress=False)
    assert not marker.exists()


def test_crafted_pytorch_model_bin_is_refused(tmp_path, tiny_gpt2_dir, text_file, capsys):
    marker = tmp_path / "PWNED"
    d = _copy(tiny_gpt2_dir, tmp_path / "evil")
    (d / "model.safetensors").unlink()
    torch.save({"transformer.wte.weight": Payload(marker)}, d / "pytorch_model.bin")
    out = tmp_path / "out"
    user_error(capsys, _measure(d, text_file, out), "could not load model")
    assert not marker.exists()


def test_stage_caches_hold_no_pickles(tmp_path, capsys, monkeypatch):
    """``reproduce`` caches only CSV / JSON(L) / Markdown / PNG / safetensors; a pickle planted under every
    cache name it could read is never loaded, and a tampered tensor cache is a clear error."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    marker = tmp_path / "PWNED"
    out = tmp_path / "r"
    argv = [
        "reproduce",
        "--model",
        "default",
        "--out",
        out,
        "--quiet",
        "--per-domain",
        "2",
        "--skip",
        "interventions",
        "--strengths",
        "1,0",
    ]
    assert main([str(a) for a in argv]) == 0
    files = [p for p in (out / "stages").rglob("*") if p.is_file() and p.name != MARKER]
    assert {p.suffix for p in files} <= {
        ".csv",
        ".json",
        ".jsonl",
        ".png",
        ".md",
        ".safetensors",
    }, {p.suffix for p in files}
    for d in (out / "stages").iterdir():
        plant(d / "q_bar.pt", marker)
        plant(d / "cache.pt", marker)
    (out / "stages" / "facts" / "facts.safetensors").write_bytes(b"\x00" * 7)
    capsys.readouterr()
    user_error(
        capsys, [*argv[:-1], "1,0.5,0", "--force"], "facts.safetensors", "--recompute"
    )  # the cached facts (q̄, profile) are read
    assert not marker.exists()


# ---- 2. nothing sinkscope did not create is deleted ------------------------------------------


def test_train_force_refuses_a_user_directory(tmp_path, capsys):
    d = tmp_path / "mine"
    d.mkdir()
    for name in ("notes.txt", "config.json", "weights.safetensors"):
        (d / name).write_text("keep me")
    user_error(
        capsys,
        ["train", "--out", d, "--force", "--quiet", "--steps", "2"],
        "not a sinkscope training run",
    )
    assert sorted(p.name for p in d.iterdir()) == [
        "config.json",
        "notes.txt",
        "weights.safetensors",
    ]
    assert all(p.read_text() == "keep me" for p in d.iterdir())


@pytest.mark.parametrize("cmd", ["zoo", "measure"])
def test_a_user_directory_is_never_an_output(cmd, tmp_path, capsys):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    user_error(capsys, [cmd, "--out", d, "--quiet"], "not a sinkscope")
    assert [p.name for p in d.iterdir()] == ["notes.txt"]


def test_train_out_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("keep me")
    user_error(capsys, ["train", "--out", f, "--quiet"], "is an existing file")
    assert f.read_text() == "keep me"


# ---- 3. numbers are finite or the run says why ------------------------------------------------


def _poisoned(src: Path, dst: Path, name: str, value: float) -> Path:
    from safetensors.torch import load_file, save_file

    d = _copy(src, dst)
    sd = load_file(str(d / "model.safetensors"))
    sd[name][0, 0] = value
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


NON_FINITE = {  # command, poisoned parameter, value, what the error names
    "nan-mlp-measure": (
        "measure",
        "transformer.h.1.mlp.c_fc.weight",
        float("nan"),
        ("transformer.h.1.mlp.c_fc.weight", "layer 1", "1 NaN"),
    ),
    "nan-mlp-intervene": (
        "intervene",
        "transformer.h.1.mlp.c_fc.weight",
        float("nan"),
        ("layer 1", "1 NaN"),
    ),
    "inf-c_attn-measure": (
        "measure",
        "transformer.h.2.attn.c_attn.weight",
        float("inf"),
        ("layer 2", "1 inf"),
    ),
    "inf-c_attn-explain": (
        "explain",
        "transformer.h.2.attn.c_attn.weight",
        float("inf"),
        ("layer 2", "1 inf"),
    ),
}


@pytest.mark.parametrize("case", list(NON_FINITE))
def test_non_finite_weights_are_an_error_naming_the_layer(
    case, tmp_path, tiny_gpt2_dir, text_file, capsys
):
    cmd, name, value, fragments = NON_FINITE[case]
    d = _poisoned(tiny_gpt2_dir, tmp_path / case, name, value)
    out = tmp_path / "out"
    user_error(capsys, _measure(d, text_file, out, cmd=cmd), *fragments, out=out)


def test_an_edit_that_overflows_names_the_layer_and_the_edit(
    tmp_path, tiny_gpt2_dir, text_file, capsys
):
    """b_Q scaled by 1e38 (the tiny model's query bias set to 1 first): the scores overflow in
    layer 1, the first layer edited, and the run stops there instead of writing NaN rows."""
    from safetensors.torch import load_file, save_file

    d = _copy(tiny_gpt2_dir, tmp_path / "biased")
    sd = load_file(str(d / "model.safetensors"))
    for l in range(3):
        sd[f"transformer.h.{l}.attn.c_attn.bias"][:64] = 1.0  # the query part of [q | k | v]
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "out"
    argv = _measure(
        d, text_file, out, "--preset", "none", "--edit", "huge=bq:1e38@1:2", cmd="intervene"
    )
    user_error(capsys, argv, "under intervention huge", "layer 1", out=out)


def test_capture_check_against_a_planted_nan():
    from sinkscope.metrics.capture import NonFiniteError, check_finite_attention

    probs = torch.rand(2, 4, 3, 5, 1)  # [batch, layer, head, q_pos, key]
    check_finite_attention(probs)
    probs[1, 2, 0, 3, 0] = float("nan")
    probs[0, 3, 1, 1, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="layer 2 "):
        check_finite_attention(probs)


def test_json_outputs_are_strict(tmp_path):
    from sinkscope.io import write_json_atomic

    write_json_atomic(
        tmp_path / "s.json",
        {"a": float("nan"), "b": [float("-inf"), 1.5], "c": {"d": float("inf")}},
    )
    text = (tmp_path / "s.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON")) == {
        "a": None,
        "b": [None, 1.5],
        "c": {"d": None},
    }


# ---- 4. every user error: one line, exit 2, nothing written -----------------------------------


def _truncate(p: Path, keep: float = 0.5) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * keep)])


def _flip_header(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[8 + 2] ^= 0xFF  # inside the JSON header that follows the 8-byte length
    p.write_bytes(bytes(data))


def _config(d: Path, **changes) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


BROKEN_MODELS = {
    "config-but-no-weights": (lambda d: (d / "model.safetensors").unlink(), "could not load model"),
    "truncated-safetensors": (lambda d: _truncate(d / "model.safetensors"), "could not load model"),
    "byte-flipped-safetensors": (
        lambda d: _flip_header(d / "model.safetensors"),
        "is not a readable safetensors file",  # its header, read before transformers
    ),
    "n_head-not-dividing-n_embd": (lambda d: _config(d, n_head=5), "could not load model"),
    "n_layer-negative": (lambda d: _config(d, n_layer=-1), "do not match config.json"),
    # the weights' headers against config.json, before any module is built
    "n_layer-above-the-weights": (
        lambda d: _config(d, n_layer=4),
        "config.json says 4 layers but its weights hold blocks 0..2",
    ),
    "n_layer-below-the-weights": (
        lambda d: _config(d, n_layer=2),
        "config.json says 2 layers but its weights hold blocks 0..2",
    ),
    "unknown-architecture": (lambda d: _config(d, model_type="bert"), "supported families"),
}


@pytest.mark.parametrize("case", list(BROKEN_MODELS))
def test_broken_model_directories(case, tmp_path, tiny_gpt2_dir, text_file, capsys):
    d = _copy(tiny_gpt2_dir, tmp_path / case)
    breaker, fragment = BROKEN_MODELS[case]
    breaker(d)
    out = tmp_path / "out"
    user_error(capsys, _measure(d, text_file, out), fragment, out=out)


def test_an_original_gpt2_checkpoint_with_its_buffers_loads(tmp_path):
    """OpenAI's GPT-2 files carry ``attn.bias`` / ``attn.masked_bias`` buffers and no
    ``transformer.`` prefix: harmless leftovers, not a mismatch with config.json."""
    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    from sinkscope import load_model

    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4)
    sd = {
        k.replace("transformer.", ""): v.contiguous()
        for k, v in GPT2LMHeadModel(cfg).state_dict().items()
        if k != "lm_head.weight"
    }
    for l in range(2):
        sd[f"h.{l}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
        sd[f"h.{l}.attn.masked_bias"] = torch.tensor(-1e4)
    cfg.save_pretrained(tmp_path)
    save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    assert load_model(str(tmp_path)).adapter.n_layers == 2


def test_truncated_partial_safetensors_file(tmp_path, tiny_gpt2_dir, capsys):
    f = tmp_path / "partial.safetensors"
    shutil.copy(tiny_gpt2_dir / "model.safetensors", f)
    _truncate(f, 0.3)
    out = tmp_path / "out"
    user_error(
        capsys,
        ["explain", "--model", f, "--out", out, "--quiet", "--weights-only"],
        "could not load model",
        out=out,
    )


def test_compare_checks_every_model_before_the_first_runs(
    tmp_path, tiny_gpt2_dir, text_file, capsys
):
    bad = _copy(tiny_gpt2_dir, tmp_path / "bad")
    _truncate(bad / "model.safetensors")
    out = tmp_path / "cmp"
    t = time.perf_counter()
    user_error(
        capsys,
        [
            "compare",
            "--models",
            f"{tiny_gpt2_dir},{bad}",
            "--inputs",
            f"text:{text_file}",
            "--out",
            out,
            "--quiet",
            "--max-tokens",
            "24",
        ],
        str(bad),
        out=out,
    )
    assert (
        time.perf_counter() - t < 5
    )  # failed before loading (let alone measuring) the first model


@pytest.mark.parametrize("case", ["csv", "text", "jsonl"])
def test_non_utf8_inputs(case, tmp_path, tiny_gpt2_dir, capsys):
    f = tmp_path / f"in.{case}"
    body = {
        "csv": b"dataset,text\nnl,caf\xe9 au lait\n",
        "text": b"caf\xe9 au lait\n",
        "jsonl": b'{"text": "caf\xe9"}\n',
    }[case]
    f.write_bytes(body)
    spec = {"csv": f"paper-csv:{f}", "text": f"text:{f}", "jsonl": f"jsonl:{f}:text"}[case]
    out = tmp_path / "out"
    user_error(
        capsys,
        ["measure", "--model", tiny_gpt2_dir, "--inputs", spec, "--out", out, "--quiet"],
        "not UTF-8",
        "0xe9",
        out=out,
    )


def test_a_csv_field_over_128_kb_is_read(tmp_path, tiny_gpt2_dir, capsys):
    """Python's csv rejects fields over 128 KB by default; a long text is a valid input."""
    import pandas as pd

    f = tmp_path / "long.csv"
    long = "the mill by the river " * 8000  # 176 KB
    pd.DataFrame(
        {
            "dataset": ["nl", "nl"],
            "text": [long, "a short one about the mill and the river and the town " * 3],
        }
    ).to_csv(f, index=False)
    out = tmp_path / "out"
    assert (
        main(
            [
                "measure",
                "--model",
                str(tiny_gpt2_dir),
                "--inputs",
                f"paper-csv:{f}",
                "--out",
                str(out),
                "--quiet",
                "--no-figures",
                "--max-tokens",
                "24",
            ]
        )
        == 0
    )
    assert json.loads((out / "summary.json").read_text())["n_examples"] == 2


def test_max_tokens_beyond_the_learned_positions(tmp_path, tiny_gpt2_dir, text_file, capsys):
    out = tmp_path / "out"
    user_error(
        capsys,
        _measure(tiny_gpt2_dir, text_file, out, "--max-tokens", "200"),
        "128 learned positions",
        "--max-tokens 128",
        out=out,
    )


@pytest.mark.parametrize(
    "device,fragment",
    [("nonsense", "is not a torch device"), ("cuda", "no CUDA device"), ("cuda:7", "CUDA")],
)
def test_bad_device_before_loading(device, fragment, tmp_path, tiny_gpt2_dir, text_file, capsys):
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has the CUDA devices asked for")
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out"
    user_error(
        capsys, _measure(tiny_gpt2_dir, text_file, out, "--device", device), fragment, out=out
    )


EDITS = {
    "zero_wk:999999": "coordinate(s) 999999 outside the model's 64",
    "random_wk:999999": "cannot draw 999999",
    "pos:99999": "within the model's 128 learned positions",
    "bq:0@5:2": "0 <= START < STOP",
    "skip_mlp@0:999": "layers 0..998 are outside the model's 3 layers",
    "bq:nan": "not a finite number",
    "zero_wk:-1": "negative",
    "random_wk:3:42:papers": "the draw 'papers' is unknown; use sinkscope or paper",
    "random_wk:0:42:paper": "cannot draw 0",
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_bad_edits(edit, tmp_path, tiny_gpt2_dir, text_file, capsys):
    out = tmp_path / "out"
    err = user_error(
        capsys,
        [
            "intervene",
            "--model",
            tiny_gpt2_dir,
            "--inputs",
            f"text:{text_file}",
            "--out",
            out,
            "--quiet",
            "--max-tokens",
            "24",
            "--edit",
            f"x={edit}",
        ],
        EDITS[edit],
        out=out,
    )
    assert len(err) < 300, err  # a short line, not a list of 999 layers


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--coords-rule", "paper", "--sigma", "2"], "--coords-rule paper takes the top-3 |EPE_0|"),
        (["--preset", "none", "--random", "paper"], "write the draw in --edit instead"),
    ],
    ids=["coords-rule-paper-with-sigma", "random-without-the-preset"],
)
def test_conflicting_paper_options(args, fragment, tmp_path, tiny_gpt2_dir, text_file, capsys):
    out = tmp_path / "out"
    user_error(
        capsys,
        [
            "intervene",
            "--model",
            tiny_gpt2_dir,
            "--inputs",
            f"text:{text_file}",
            "--out",
            out,
            "--quiet",
            "--max-tokens",
            "24",
            *args,
        ],
        fragment,
        out=out,
    )


@pytest.mark.parametrize("cmd", ["intervene", "explain"])
def test_coords_outside_the_model(cmd, tmp_path, tiny_gpt2_dir, text_file, capsys):
    out = tmp_path / "out"
    user_error(
        capsys,
        [
            cmd,
            "--model",
            tiny_gpt2_dir,
            "--inputs",
            f"text:{text_file}",
            "--out",
            out,
            "--quiet",
            "--max-tokens",
            "24",
            "--coords",
            "999999",
        ],
        "999999",
        "0..63",
        out=out,
    )


def test_out_that_cannot_be_written_fails_before_the_work(
    tmp_path, tiny_gpt2_dir, text_file, capsys
):
    probe = Path("/sys/sinkscope-probe")
    try:
        probe.mkdir()
        probe.rmdir()
        pytest.skip("/sys is writable here; no unwritable directory to test with")
    except OSError:
        pass
    t = time.perf_counter()
    user_error(
        capsys,
        _measure(tiny_gpt2_dir, text_file, "/sys/sinkscope-out"),
        "cannot be written",
        "choose a writable directory",
    )
    assert time.perf_counter() - t < 2  # before loading the model


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--eps", "2"], "--eps 2.0 must be a number in [0, 1)"),
        (["--eps", "nan"], "--eps nan"),
        (["--layers", "5:2"], "START must be at least 0 and below STOP"),
        (["--layers=-1:2"], "START must be at least 0"),
        (
            ["--dtype", "bf16"],
            "--dtype bf16 is not a dtype sinkscope loads; use float32, bfloat16, float16 or auto",
        ),
        (
            ["--device-map", "balanced"],
            "--device-map balanced is not supported; use --device-map auto",
        ),
        (
            ["--device-map", "auto", "--device", "cuda"],
            "--device-map auto places the weights itself; drop --device cuda",
        ),
    ],
)
def test_nonsense_options(args, fragment, tmp_path, tiny_gpt2_dir, text_file, capsys):
    out = tmp_path / "out"
    user_error(capsys, _measure(tiny_gpt2_dir, text_file, out, *args), fragment, out=out)


def test_a_revision_needs_a_name(tmp_path, text_file, capsys):
    out = tmp_path / "out"
    user_error(
        capsys,
        _measure("gpt2@", text_file, out),
        "--model gpt2@ names no revision",
        "ORG/NAME@REVISION",
        out=out,
    )


def test_device_map_on_a_partial_checkpoint(tmp_path, tiny_gpt2_dir, text_file, capsys):
    from safetensors.torch import save_file

    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "config.json").write_text((tiny_gpt2_dir / "config.json").read_text())
    save_file(
        {"transformer.wpe.weight": torch.zeros(128, 64)}, str(tmp_path / "p" / "w.safetensors")
    )
    out = tmp_path / "out"
    user_error(
        capsys,
        _measure(tmp_path / "p" / "w.safetensors", text_file, out, "--device-map", "auto"),
        "is a partial checkpoint, which --device-map cannot place",
        out=out,
    )


def test_layers_beyond_the_model(tmp_path, tiny_gpt2_dir, text_file, capsys):
    out = tmp_path / "out"
    user_error(
        capsys,
        _measure(tiny_gpt2_dir, text_file, out, "--layers", "2:9"),
        "outside the model's 3 layers",
        out=out,
    )


# ---- 5. concurrency ---------------------------------------------------------------------------


def test_a_second_reproduce_on_a_live_out_is_refused(tmp_path, capsys, monkeypatch):
    """A running reproduce holds a lock on its directory (flock: released if it dies); a second
    one refuses instead of deleting the first one's temp directories."""
    from sinkscope.io import exclusive_dir

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "r"
    (out / "stages" / ".measure.tmp-live").mkdir(parents=True)
    mark(out, "reproduce")
    with exclusive_dir(out, "test"):  # stands for the first, still running, reproduce
        user_error(
            capsys,
            ["reproduce", "--model", "default", "--out", out, "--quiet", "--per-domain", "2"],
            "in use by a running sinkscope command",
        )
    assert (out / "stages" / ".measure.tmp-live").exists()


def test_temp_dirs_of_killed_runs_are_cleaned_and_live_ones_kept(
    tmp_path, tiny_gpt2_dir, text_file
):
    """A SIGKILLed run leaves ``.out.tmp-*`` or ``.out.old-*``
    (both with sinkscope's temp marker); the next run removes those, but not a live run's (locked)
    temp directory and never a user's directory, or a sinkscope result, that merely has such a name."""
    from sinkscope.io import _flock

    out = tmp_path / "out"
    dead = tmp_path / ".out.tmp-dead1234"
    dead.mkdir()
    (dead / TMP_MARKER).write_text("")
    (dead / "metrics.csv").write_text("half a fil")
    old = tmp_path / ".out.old-dead5678"  # a replaced result a killed swap left behind
    old.mkdir()
    mark(old, "result")
    (old / TMP_MARKER).write_text("")
    kept = (
        tmp_path / ".out.old-keep"
    )  # a result the user asked for under that name (--out .out.old-keep)
    kept.mkdir()
    mark(kept, "result")
    live = tmp_path / ".out.tmp-live9999"
    live.mkdir()
    (live / TMP_MARKER).write_text("")
    users = [tmp_path / ".out.tmp-mydata", tmp_path / ".out.old-notes"]
    for u in users:
        u.mkdir()
        (u / "keep.txt").write_text("keep me")
    with _flock(live):  # a concurrent run still writing
        assert main([str(a) for a in _measure(tiny_gpt2_dir, text_file, out)]) == 0
    assert (
        not dead.exists()
        and not old.exists()
        and live.exists()
        and kept.exists()
        and (out / "metrics.csv").exists()
    )
    assert all((u / "keep.txt").read_text() == "keep me" for u in users)


def test_glob_characters_in_out_match_nothing_else(tmp_path, tiny_gpt2_dir, text_file):
    """``--out '*'`` is a directory named ``*``: cleaning its temp names never touches others'."""
    other = tmp_path / ".project.tmp-2024"
    other.mkdir()
    (other / TMP_MARKER).write_text("")  # even one that looks like sinkscope's
    assert main([str(a) for a in _measure(tiny_gpt2_dir, text_file, tmp_path / "*")]) == 0
    assert other.exists() and (tmp_path / "*" / "metrics.csv").exists()


def test_two_runs_finishing_on_one_out_both_succeed(tmp_path, tiny_gpt2_dir, text_file):
    """Two measure processes on the same --out: both exit 0, the result is one whole run."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sinkscope", *map(str, _measure(tiny_gpt2_dir, text_file, out))]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-1500:]
    assert sorted(p.name for p in out.iterdir()) == [
        ".sinkscope",
        "inputs.jsonl",
        "metrics.csv",
        "per_layer.csv",
        "summary.json",
    ]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


# ---- 7. signals -------------------------------------------------------------------------------


def _spawn(argv, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "sinkscope", *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
        preexec_fn=default_sigint_in_child,
    )


def test_sigterm_while_writing_leaves_nothing(tmp_path):
    out = tmp_path / "m"
    proc = _spawn(["measure", "--out", out, "--quiet", "--per-domain", "30"], tmp_path)
    deadline = time.time() + 240
    while not list(tmp_path.glob(".m.tmp-*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    if proc.poll() is not None:
        pytest.skip("the run finished before its temp directory was seen")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the signal arrived after the result was in place")
    assert proc.returncode == 143, err[-1500:]
    assert err.strip().splitlines()[-1].startswith("sinkscope: terminated"), err[-1500:]
    assert "Traceback" not in err and not out.exists() and not list(tmp_path.glob(".m.*"))


def test_ctrl_c_during_imports_is_one_line(tmp_path):
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc to see when the child starts loading torch")
    proc = _spawn(["measure", "--out", tmp_path / "m", "--quiet"], tmp_path)
    deadline = time.time() + 120
    while (
        proc.poll() is None and time.time() < deadline
    ):  # the CLI parsed its arguments; torch is loading now
        try:
            if "libtorch" in Path(f"/proc/{proc.pid}/maps").read_text():
                break
        except OSError:
            pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (130, -signal.SIGINT), err[-1500:]
    assert "Traceback" not in err and err.strip().startswith("sinkscope: interrupted"), err[-1500:]


def test_interrupted_train_points_to_its_checkpoint(tmp_path):
    from sinkscope.cli.main import _interrupted_note

    run = tmp_path / "run"
    assert "nothing half-written" in _interrupted_note(["train", "--out", str(run)])
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")
    assert "checkpoint" in _interrupted_note(
        ["train", "--out", str(run)]
    ) and "--resume" in _interrupted_note(["train", "--out", str(run)])


def test_the_cli_parses_before_importing_torch():
    """``import sinkscope.cli`` and building the parser (``--help``, ``--version``) import neither
    torch nor transformers: a Ctrl-C then finds sinkscope's handler in place, and help is instant."""
    r = subprocess.run(
        [sys.executable, "-c", "import sinkscope.cli, sys; sys.exit('torch' in sys.modules)"]
    )
    assert r.returncode == 0
    code = "import sys; from sinkscope.cli import build_parser; build_parser(); sys.exit(bool({'torch', 'transformers'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    from sinkscope import __version__

    r = subprocess.run(
        [sys.executable, "-m", "sinkscope", "--version"], capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.strip() == f"sinkscope {__version__}"


# ---- second audit: what a fresh pair of eyes found ----------------------------------------------

TR = [
    "train",
    "--layers",
    "1",
    "--width",
    "16",
    "--heads",
    "2",
    "--steps",
    "3",
    "--vocab",
    "300",
    "--eval-every",
    "0",
    "--quiet",
]


def _tiny_corpus(tmp_path) -> Path:
    f = tmp_path / "corpus.txt"
    f.write_text(
        "\n".join(
            f"story {i}: the miller walked past the river to the town and back again " * 4
            for i in range(300)
        )
        + "\n"
    )
    return f


@pytest.mark.parametrize("case", ["list", "number-as-block", "string-mean", "empty", "nan"])
def test_baseline_of_the_wrong_shape(case, tmp_path, tiny_gpt2_dir, text_file, capsys):
    b = tmp_path / "b.json"
    b.write_text(
        {
            "list": "[1, 2, 3]",
            "number-as-block": '{"bos_attention": 5}',
            "string-mean": '{"bos_attention": {"all": {"mean": "x"}}}',
            "empty": "{}",
            "nan": "NaN",
        }[case]
    )
    out = tmp_path / "out"
    t = time.perf_counter()
    user_error(
        capsys,
        _measure(tiny_gpt2_dir, text_file, out, "--baseline", b),
        "--baseline",
        "has no bos_attention",
        out=out,
    )
    assert time.perf_counter() - t < 2  # before loading the model


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["mitigate", "--models", ","], "--models is empty"),
        (["mitigate", "--strengths", ","], "names no strength"),
        (["zoo", "--seeds", "a", "--variants", "full"], "--seeds a is not"),
        (["zoo", "--seeds", "99999999999999999999", "--variants", "full"], "must lie in [0, 2^32)"),
        (
            ["zoo", "--seeds", "0", "--variants", "full", "--device", "nonsense"],
            "is not a torch device",
        ),
        ([*TR, "--device", "nonsense"], "is not a torch device"),
        ([*TR, "--lr", "nan"], "--lr nan must be"),
        ([*TR, "--lr", "-1"], "--lr -1.0 must be"),
        ([*TR, "--weight-decay", "nan"], "--weight-decay nan"),
        ([*TR, "--heads", "0"], "--heads 0 must be positive"),
        ([*TR, "--seed", "99999999999999999999"], "--seed"),
    ],
)
def test_more_bad_options_leave_nothing(argv, fragment, tmp_path, capsys):
    out = tmp_path / "o"
    user_error(capsys, [*argv, "--out", out], fragment, out=out)


def test_train_that_fails_before_its_first_checkpoint_leaves_no_run(tmp_path, capsys):
    out = tmp_path / "run"
    corpus = _tiny_corpus(tmp_path)
    user_error(
        capsys,
        [*TR, "--data", f"text:{corpus}", "--context", "100000", "--out", out],
        "do not fill one --context 100000 window",
        out=out,
    )
    assert (
        main([*TR, "--data", f"text:{corpus}", "--context", "40", "--out", str(out)]) == 0
    )  # the same --out, no --force needed
    capsys.readouterr()
    user_error(
        capsys,
        [
            *TR,
            "--data",
            f"text:{corpus}",
            "--context",
            "40",
            "--steps",
            "2",
            "--resume",
            "--out",
            out,
        ],
        "--steps 2 is below the 3 steps",
    )
    user_error(
        capsys,
        [
            *TR,
            "--data",
            f"text:{corpus}",
            "--context",
            "40",
            "--steps",
            "5",
            "--resume",
            "--vocab",
            "400",
            "--out",
            out,
        ],
        "different settings (vocab)",
    )


@pytest.mark.parametrize("cmd", ["measure", "train"])
def test_a_directory_of_another_kind_is_never_replaced(
    cmd, tmp_path, tiny_gpt2_dir, text_file, capsys
):
    """A training run under ``measure --out`` (or a result under ``train --force``) is refused:
    a marker says which command made a directory, and only that command replaces it."""
    from sinkscope.io import mark

    d = _copy(tiny_gpt2_dir, tmp_path / "model")
    mark(d, "train" if cmd == "measure" else "result")
    argv = _measure(d, text_file, d) if cmd == "measure" else [*TR, "--force", "--out", d]
    user_error(
        capsys,
        argv,
        "sinkscope training run" if cmd == "measure" else "not a sinkscope training run",
    )
    assert (d / "model.safetensors").exists() and (d / "config.json").exists()


def test_a_path_through_a_missing_folder_names_its_real_target(tmp_path, capsys, monkeypatch):
    """``victim/missing/..`` is ``victim``: a user's directory, refused; nothing is created."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.txt").write_text("keep me")
    for cmd in ("measure", "reproduce"):
        user_error(
            capsys,
            [
                cmd,
                "--model",
                "default",
                "--per-domain",
                "2",
                "--quiet",
                "--out",
                f"{victim}/missing/..",
            ],
            "not a sinkscope output",
        )
    assert sorted(p.name for p in victim.iterdir()) == ["thesis.txt"]


def test_reproduce_with_a_bad_band_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "rp"
    user_error(
        capsys,
        [
            "reproduce",
            "--model",
            "default",
            "--per-domain",
            "2",
            "--quiet",
            "--layers",
            "3:99",
            "--out",
            out,
        ],
        "outside the model's 6 layers",
        out=out,
    )


def test_a_result_locked_by_a_live_run_is_not_swapped(tmp_path, tiny_gpt2_dir, text_file, capsys):
    from sinkscope.io import _flock

    out = tmp_path / "out"
    assert main([str(a) for a in _measure(tiny_gpt2_dir, text_file, out)]) == 0
    with _flock(out):
        user_error(
            capsys, _measure(tiny_gpt2_dir, text_file, out), "in use by a running sinkscope command"
        )
    assert (out / "metrics.csv").exists()


def test_unusual_but_valid_out_paths(tmp_path, tiny_gpt2_dir, text_file, monkeypatch):
    """A 250-character name, ``--out .`` inside an earlier result, a symbolic link to one."""
    long = tmp_path / ("a" * 250)
    assert (
        main([str(a) for a in _measure(tiny_gpt2_dir, text_file, long)]) == 0
        and (long / "metrics.csv").exists()
    )
    monkeypatch.chdir(long)
    assert main([str(a) for a in _measure(tiny_gpt2_dir, text_file, ".")]) == 0
    assert (long / "metrics.csv").exists() and not [
        p for p in tmp_path.iterdir() if ".old-" in p.name or ".tmp-" in p.name
    ]
    link = tmp_path / "link"
    link.symlink_to(long)
    assert main([str(a) for a in _measure(tiny_gpt2_dir, text_file, link)]) == 0
    assert link.is_symlink() and (link / "metrics.csv").exists()


def test_inputs_edge_cases(tmp_path, tiny_gpt2_dir, capsys):
    """A domain named ``all`` would overwrite the aggregate: refused. A CSV with a UTF-8 BOM
    (Excel's default) is read."""
    j = tmp_path / "all.jsonl"
    j.write_text(
        "\n".join(
            json.dumps({"text": "the mill by the river and the town " * 5, "domain": d})
            for d in ("all", "x", "x")
        )
    )
    out = tmp_path / "out"
    user_error(
        capsys,
        [
            "measure",
            "--model",
            tiny_gpt2_dir,
            "--inputs",
            f"jsonl:{j}:text",
            "--out",
            out,
            "--quiet",
            "--max-tokens",
            "24",
        ],
        "domain named 'all'",
        out=out,
    )
    c = tmp_path / "bom.csv"
    c.write_bytes(
        b"\xef\xbb\xbfdataset,text\nnl," + b"the mill by the river and the town " * 5 + b"\n"
    )
    assert (
        main(
            [
                "measure",
                "--model",
                str(tiny_gpt2_dir),
                "--inputs",
                f"paper-csv:{c}",
                "--out",
                str(out),
                "--quiet",
                "--no-figures",
                "--max-tokens",
                "24",
            ]
        )
        == 0
    )


def test_two_models_with_one_folder_name_stay_apart(tmp_path, tiny_gpt2_dir, text_file):
    import pandas as pd

    a, b = (
        _copy(tiny_gpt2_dir, tmp_path / "x" / "run"),
        _copy(tiny_gpt2_dir, tmp_path / "y" / "run"),
    )
    out = tmp_path / "mit"
    assert (
        main(
            [
                "mitigate",
                "--models",
                f"{a},{b}",
                "--inputs",
                f"text:{text_file}",
                "--out",
                str(out),
                "--quiet",
                "--no-figures",
                "--max-tokens",
                "24",
                "--strengths",
                "1,0",
                "--edits",
                "bq",
            ]
        )
        == 0
    )
    assert set(pd.read_csv(out / "tradeoff.csv").model) == {str(a), str(b)}


# ---- code review findings ------------------------------------------------------------------------


def test_train_force_that_fails_keeps_what_the_user_put_in_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    corpus = _tiny_corpus(tmp_path)
    assert main([*TR, "--data", f"text:{corpus}", "--context", "40", "--out", str(out)]) == 0
    (out / "NOTES.md").write_text("mine")
    capsys.readouterr()
    user_error(
        capsys,
        [*TR, "--data", f"text:{corpus}", "--context", "100000", "--force", "--out", out],
        "do not fill one",
    )
    assert (out / "NOTES.md").read_text() == "mine" and (out / MARKER).exists()


def test_a_run_from_before_markers_can_be_resumed(tmp_path):
    out = tmp_path / "run"
    corpus = _tiny_corpus(tmp_path)
    argv = [
        *TR,
        "--data",
        f"text:{corpus}",
        "--context",
        "40",
        "--out",
        str(out),
        "--ckpt-every",
        "1",
    ]
    assert main(argv) == 0
    (out / MARKER).unlink()  # as an earlier sinkscope left it
    argv[argv.index("--steps") + 1] = "4"
    assert main([*argv, "--resume"]) == 0 and (out / MARKER).exists()


def test_a_checkpoint_of_random_bytes_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    mark(run, "train")
    (run / "checkpoint.pt").write_bytes(b"hello world\n" * 10)
    user_error(capsys, [*TR, "--resume", "--out", run], "not a readable checkpoint")


def test_a_stop_between_the_two_renames_puts_the_old_result_back(
    tmp_path, tiny_gpt2_dir, text_file, monkeypatch
):
    """SIGTERM (or anything) right after the old result was moved aside: it is moved back."""
    import sinkscope.io as sio

    out = tmp_path / "out"
    assert main([str(a) for a in _measure(tiny_gpt2_dir, text_file, out)]) == 0
    before = (out / "metrics.csv").read_bytes()
    real = os.replace
    calls = []

    def replace_then_stop(a, b):
        real(a, b)
        calls.append(b)
        if len(calls) == 1:
            raise KeyboardInterrupt  # lands between moving the old result aside and putting the new one

    monkeypatch.setattr(sio.os, "replace", replace_then_stop)
    with pytest.raises(KeyboardInterrupt):
        with sio.atomic_output_dir(out) as tmp:
            (tmp / "metrics.csv").write_text("new")
    monkeypatch.setattr(sio.os, "replace", real)
    assert (out / "metrics.csv").read_bytes() == before and not [
        p for p in tmp_path.iterdir() if ".old-" in p.name or ".tmp-" in p.name
    ]


def test_a_long_non_ascii_out_name(tmp_path, tiny_gpt2_dir, text_file):
    out = tmp_path / ("あ" * 84)  # 252 bytes: a legal name whose temp names must be cut by bytes
    assert (
        main([str(a) for a in _measure(tiny_gpt2_dir, text_file, out)]) == 0
        and (out / "metrics.csv").exists()
    )


def test_lazy_packages_keep_their_submodules():
    code = (
        "import sinkscope, sys; sinkscope.models.load_model; sinkscope.data.load_inputs; sinkscope.stages.measure; "
        "import sinkscope.data as d; d.corpus; assert 'load_model' in dir(sinkscope)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-1500:]


def test_interrupted_train_note_reads_out_equals(tmp_path):
    from sinkscope.cli.main import _interrupted_note

    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert "--resume" in _interrupted_note(["train", f"--out={tmp_path}"])
