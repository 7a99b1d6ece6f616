"""Trust, second round (issue 26, classes 3 and 4; docs/reliability.md "Trust, second round:
caches and user files"): a cached result answers only for the files it was computed from, a
damaged cached record is computed again with one warning, and only what sinkscope marked and
wrote is ever reused or removed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from sinkscope.cli import main
from sinkscope.io import MARKER, mark, marker_files, marker_kind, record_files
from sinkscope.models.sources import embedded_model_dir
from sinkscope.runs import marker_run

SWEEP = ["--lengths", "40", "--per-domain", "2", "--preset", "none", "--quiet", "--no-figures"]
TRAIN = ["train", "--layers", "1", "--width", "16", "--heads", "2", "--steps", "2"]
TRAIN += ["--vocab", "300", "--eval-every", "0", "--context", "40", "--quiet"]
WEIGHT_ONLY = ["--skip", "measure,circuit_forward,interventions,shared_query,mitigate"]


def _model_copy(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    shutil.copytree(embedded_model_dir(), d)
    return d


def _change_weights(d: Path) -> None:
    """Other weights of the same shapes, as a re-saved checkpoint would have."""
    from safetensors.torch import load_file, save_file

    t = load_file(str(d / "model.safetensors"))
    for k in t:
        if "attn.c_attn.weight" in k:
            t[k] = t[k] * 1.5
    save_file(t, str(d / "model.safetensors"), metadata={"format": "pt"})


def _change_tokenizer(d: Path) -> None:
    """Another tokenizer (the last 300 merges dropped), the weights untouched."""
    tok = json.loads((d / "tokenizer.json").read_text())
    tok["model"]["merges"] = tok["model"]["merges"][:-300]
    (d / "tokenizer.json").write_text(json.dumps(tok))


def _sweep(out: Path, *extra: str) -> tuple[pd.DataFrame, dict]:
    assert main(["sweep", *SWEEP, *extra, "--out", str(out)]) == 0
    return pd.read_csv(out / "sweep.csv"), json.loads((out / "sweep.json").read_text())


def _baseline(frame: pd.DataFrame) -> float:
    return float(frame[frame.domain == "all"].bos_attention.iloc[0])


# ---- class 3: a cache answers only for the inputs it was computed from -------------------------


@pytest.mark.parametrize(
    "change", [_change_weights, _change_tokenizer], ids=["weights", "tokenizer"]
)
def test_sweep_recomputes_a_cell_whose_model_files_changed(change, tmp_path):
    model, out = _model_copy(tmp_path), tmp_path / "s"
    first, _ = _sweep(out, "--models", str(model))
    again, info = _sweep(out, "--models", str(model))
    assert (info["cells_cached"], info["cells_computed"]) == (1, 0)  # nothing changed: reused
    change(model)
    after, info = _sweep(out, "--models", str(model))
    assert (info["cells_cached"], info["cells_computed"]) == (0, 1)
    assert _baseline(after) != pytest.approx(_baseline(first), abs=1e-9)
    assert len(list((out / "cells").iterdir())) == 2  # the old cell is left, never answered from


def test_sweep_recomputes_natural_cells_after_the_inputs_file_is_edited(tmp_path):
    words = "the river ran past the old mill and the miller sang of bread and rain".split()
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(" ".join(words[(i + j) % 15] for j in range(60)) for i in range(4)))
    out = tmp_path / "s"
    first, _ = _sweep(out, "--inputs", f"text:{data}", "--content", "natural,random")
    data.write_text(
        "\n".join(" ".join(words[(3 * i + j) % 7] for j in range(60)) for i in range(4))
    )
    after, info = _sweep(out, "--inputs", f"text:{data}", "--content", "natural,random")
    assert (info["cells_cached"], info["cells_computed"]) == (1, 1)  # random ids read no file
    nat = lambda f: _baseline(f[f.content == "natural"])  # noqa: E731
    assert nat(after) != pytest.approx(nat(first), abs=1e-9)


@pytest.fixture(scope="module")
def one_cell(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cell") / "s"
    assert main(["sweep", *SWEEP, "--out", str(out)]) == 0
    return out


def _damage_json(path: Path, how: str) -> None:
    rec = json.loads(path.read_text())
    if how == "truncated":
        path.write_text(path.read_text()[: len(path.read_text()) // 2])
        return
    if how == "list":
        rec = [rec]
    elif how == "list-for-a-number":
        rec["rows"][0]["bos_attention"] = [0.5]
    elif how == "no-rows":
        del rec["rows"]
    elif how == "row-without-n":
        del rec["rows"][0]["n"]
    path.write_text(json.dumps(rec))


@pytest.mark.parametrize(
    "how", ["truncated", "list", "list-for-a-number", "no-rows", "row-without-n"]
)
def test_a_damaged_cached_cell_is_recomputed_with_one_warning(how, one_cell, tmp_path, capsys):
    out = tmp_path / "s"
    shutil.copytree(one_cell, out)
    (cell,) = (out / "cells").iterdir()
    _damage_json(cell, how)
    capsys.readouterr()
    assert main(["sweep", *SWEEP, "--out", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(cell) in err[0] and "recomputing" in err[0], err
    assert json.loads((out / "sweep.json").read_text())["cells_computed"] == 1
    assert (out / "sweep.csv").read_bytes() == (one_cell / "sweep.csv").read_bytes()


def _reproduce(out: Path, model: Path, *extra: str) -> dict:
    argv = ["reproduce", "--model", str(model), "--per-domain", "2", *WEIGHT_ONLY, *extra]
    assert main([*argv, "--quiet", "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    return {s["name"]: s["status"] for s in run["stages"]}


@pytest.fixture(scope="module")
def weight_only_run(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("rep")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        model = _model_copy(base)
        assert _reproduce(base / "run", model)["circuit_weights"] == "ran"
    return base / "run", model


def test_reproduce_recomputes_a_weight_only_stage_after_the_tokenizer_changes(tmp_path):
    """A weight-only run (no inputs: no token ids in any key) of the same weights with another
    tokenizer is not answered from the cache."""
    from sinkscope.models import load_model
    from sinkscope.studies.reproduce import reproduce

    model, out = _model_copy(tmp_path), tmp_path / "run"

    def status() -> dict:
        r = reproduce(load_model(str(model)), None, out, progress=False)
        return {s.name: s.status for s in r.stages}

    assert status()["circuit_weights"] == "ran"
    assert status()["circuit_weights"] == "cached"
    _change_tokenizer(model)
    st = status()
    assert st["facts"] == st["circuit_weights"] == "ran"
    assert json.loads((out / "run.json").read_text())["tokenizer_sha256"]


@pytest.mark.parametrize("how", ["truncated", "list", "summary-of-another-shape"])
def test_a_damaged_stage_record_is_recomputed_with_one_warning(
    how, weight_only_run, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run, model = weight_only_run
    out = tmp_path / "run"
    shutil.copytree(run, out)
    rec = out / "stages" / "circuit_weights" / "stage.json"
    if how == "truncated":
        rec.write_text(rec.read_text()[:200])
    else:
        r = json.loads(rec.read_text())
        if how == "summary-of-another-shape":
            r["summary"] = {"layer_band": "3..11", "epe": [1, 2]}
        rec.write_text(json.dumps([r] if how == "list" else r))
    capsys.readouterr()
    status = _reproduce(out, model)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and str(rec) in err[0] and "recomputing" in err[0], err
    assert status["circuit_weights"] == "ran" and status["facts"] == "cached"


# ---- class 4: only what sinkscope marked is reused, only what it wrote is removed ----------------


def _corpus(path: Path) -> Path:
    path.write_text(
        "\n".join(
            f"story {i}: the miller walked past the river to the town " * 4 for i in range(300)
        )
    )
    return path


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_sweep_refuses_a_user_directory_that_has_a_cells_folder(tmp_path, capsys):
    d = tmp_path / "project"
    (d / "cells").mkdir(parents=True)
    (d / "cells" / "notes.json").write_text("{}")
    (d / "sweep.csv").write_text("mine\n")
    before = _files(d)
    assert main(["sweep", *SWEEP, "--out", str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a sinkscope sweep" in err[0], err
    assert _files(d) == before and not (d / MARKER).exists()


def test_train_force_removes_only_what_the_run_wrote(tmp_path):
    out, data = tmp_path / "run", _corpus(tmp_path / "corpus.txt")
    assert main([*TRAIN, "--data", f"text:{data}", "--out", str(out), "--save-at", "1"]) == 0
    mine = {"notes.txt": "mine", "results.json": "{}", "checkpoints/README.txt": "mine too"}
    for name, text in mine.items():
        (out / name).write_text(text)
    assert main([*TRAIN, "--data", f"text:{data}", "--out", str(out), "--force"]) == 0
    assert all((out / n).read_text() == t for n, t in mine.items())
    assert not (out / "checkpoints" / "step-000001").exists()  # the old run's kept step is gone
    assert (out / "model.safetensors").exists() and marker_kind(out) == "train"


def test_train_force_never_removes_a_file_the_run_reads(tmp_path):
    out = tmp_path / "run"
    assert main([*TRAIN, "--data", f"text:{_corpus(tmp_path / 'c.txt')}", "--out", str(out)]) == 0
    data = _corpus(out / "corpus.txt")  # --data inside --out
    tok = out / "tokenizer" / "tokenizer.json"  # --tokenizer: the run's own fitted tokenizer
    ino = tok.stat().st_ino
    argv = [*TRAIN, "--data", f"text:{data}", "--tokenizer", str(out / "tokenizer")]
    assert main([*argv, "--out", str(out), "--force"]) == 0
    assert data.exists() and tok.stat().st_ino == ino  # neither removed (nor rewritten)


@pytest.mark.parametrize("bad", ["context", "not-utf8"])
def test_train_force_with_a_user_error_leaves_the_finished_run_whole(bad, tmp_path, capsys):
    out, data = tmp_path / "run", _corpus(tmp_path / "corpus.txt")
    assert main([*TRAIN, "--data", f"text:{data}", "--out", str(out)]) == 0
    before = _files(out)
    argv = [*TRAIN, "--data", f"text:{data}", "--out", str(out), "--force"]
    if bad == "context":
        argv[argv.index("--context") + 1] = "100000"
    else:
        (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 500)
        argv[argv.index("--data") + 1] = f"text:{tmp_path / 'latin1.txt'}"
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sinkscope: error:"), err
    assert _files(out) == before  # the finished run, byte for byte


def test_train_force_refuses_an_unmarked_directory_that_looks_like_a_run(tmp_path, capsys):
    d = tmp_path / "project"
    (d / "tokenizer").mkdir(parents=True)
    (d / "tokenizer" / "tokenizer.json").write_text("{}")
    (d / "training.json").write_text('{"mine": true}')
    (d / "notes.txt").write_text("mine")
    before = _files(d)
    assert (
        main([*TRAIN, "--data", f"text:{_corpus(tmp_path / 'c.txt')}", "--out", str(d), "--force"])
        == 2
    )
    assert "not a sinkscope training run" in capsys.readouterr().err
    assert _files(d) == before and not (d / MARKER).exists()


def test_train_resume_does_not_adopt_a_directory_whose_checkpoint_is_not_sinkscopes(
    tmp_path, capsys
):
    d = tmp_path / "project"
    (d / "tokenizer").mkdir(parents=True)
    (d / "tokenizer" / "tokenizer.json").write_text("{}")
    (d / "checkpoint.pt").write_bytes(b"not a checkpoint\n" * 20)
    before = _files(d)
    assert main([*TRAIN, "--out", str(d), "--resume"]) == 2
    assert "not a sinkscope training run" in capsys.readouterr().err
    assert _files(d) == before and not (d / MARKER).exists()


def test_the_marker_keeps_the_written_names_and_the_run_settings(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    mark(d, "train")
    assert marker_files(d) is None  # nothing written yet
    record_files(d, ["checkpoint.pt", "tokenizer"])
    record_files(d, ["tokenizer", "config.json"])
    mark(d, "train", {"command": "train", "options": {"steps": 2}})  # a new run's settings
    assert marker_files(d) == ["checkpoint.pt", "tokenizer", "config.json"]
    assert marker_run(d) == {"command": "train", "options": {"steps": 2}}
    assert marker_kind(d) == "train"
    record_files(tmp_path, ["x"])  # an unmarked directory: nothing is recorded there
    assert not (tmp_path / MARKER).exists()


def test_zoo_refuses_a_users_folder_that_looks_like_a_zoo(tmp_path, capsys):
    """A folder with a zoo.json and runs' names but no sinkscope marker is a user's: refused
    before anything trains, every file left as it was."""
    from sinkscope.cli import main

    d = tmp_path / "project"
    (d / "tokenizer").mkdir(parents=True)
    (d / "zoo.json").write_text('{"my": "notes"}')
    (d / "tokenizer" / "tokenizer.json").write_text("{}")
    before = {p: p.read_bytes() for p in d.rglob("*") if p.is_file()}
    assert main(["zoo", "--out", str(d), "--variants", "full", "--seeds", "0", "--quiet"]) == 2
    assert "is not a sinkscope zoo" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in d.rglob("*") if p.is_file()} == before
