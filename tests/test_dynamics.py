"""Training dynamics (issue 15): ``train --save-at`` keeps loadable checkpoints of the right steps
(also across a resume), bad steps are one-line errors, and ``sinkscope dynamics`` gives, per
checkpoint, the numbers ``measure`` / ``explain`` / ``intervene`` give on that checkpoint."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from sinkscope.cli import main
from sinkscope.errors import SinkscopeError
from sinkscope.training import TrainConfig, train
from sinkscope.training.recipe import tiny_texts

TINY = dict(
    n_layer=2,
    n_embd=32,
    n_head=4,
    context=40,
    batch=4,
    steps=4,
    vocab=300,
    eval_every=0,
    ckpt_every=2,
    warmup=2,
)
INPUTS = ["--per-domain", "3", "--quiet"]


def _ckpt(run, step):
    return run / "checkpoints" / f"step-{step:06d}"


def _weights(d):
    return load_file(str(d / "model.safetensors"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run that kept steps 0, 2 and 4."""
    out = tmp_path_factory.mktemp("dyn") / "run"
    train(TrainConfig(**TINY), out, data=tiny_texts(), progress=False, save_at="0,2,4")
    return out


def test_save_at_keeps_loadable_checkpoints_of_the_right_steps(run, tmp_path, capsys):
    from sinkscope.models import load_model
    from sinkscope.models.sinkgpt import SinkGPTForCausalLM
    from sinkscope.training.data import read_tokenizer

    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["step-000000", "step-000002", "step-000004"]  # no temp directory left
    info = json.loads((run / "training.json").read_text())
    assert info["save_at"] == [0, 2, 4] and info["checkpoints"] == [
        f"checkpoints/{k}" for k in kept
    ]
    for step in (0, 2, 4):
        d = _ckpt(run, step)
        assert json.loads((d / "training.json").read_text())["step"] == step
        m = load_model(str(d))
        assert m.hf.config.sinkscope_step == step and m.tokenizer is not None
    # step 4 is the final model; step 0 the initial weights (the seed's initialisation)
    final, last = _weights(run), _weights(_ckpt(run, 4))
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)
    cfg = TrainConfig(**TINY)
    torch.manual_seed(cfg.seed)
    init = SinkGPTForCausalLM(cfg.model_config(read_tokenizer(str(run / "tokenizer")))).state_dict()
    first = _weights(_ckpt(run, 0))
    assert all(torch.equal(first[k], init[k]) for k in first) and not torch.equal(
        first["transformer.h.0.attn.c_attn.weight"], last["transformer.h.0.attn.c_attn.weight"]
    )
    assert (
        main(
            [
                "measure",
                "--model",
                str(_ckpt(run, 2)),
                "--out",
                str(tmp_path / "m"),
                "--no-figures",
                *INPUTS,
            ]
        )
        == 0
    )
    # keeping steps does not change the run: the same final weights as a run that keeps none
    plain = train(TrainConfig(**TINY), tmp_path / "plain", data=tiny_texts(), progress=False)
    assert plain["losses"] == info["losses"] and plain["checkpoints"] == []
    other = _weights(tmp_path / "plain")
    assert all(torch.equal(other[k], final[k]) for k in final)


def test_a_resumed_run_keeps_its_checkpoints(run, tmp_path, monkeypatch):
    import sinkscope.training.recipe as recipe

    real = recipe.sample_windows

    def interrupt_at_3(streams, batch, T, seed, step, bos_id, weights=None):
        if step == 3 and batch == TINY["batch"]:
            raise KeyboardInterrupt
        return real(streams, batch, T, seed, step, bos_id, weights)

    cfg, out = TrainConfig(**TINY), tmp_path / "c"
    monkeypatch.setattr(recipe, "sample_windows", interrupt_at_3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, data=tiny_texts(), progress=False, save_at="0,2,4")
    monkeypatch.setattr(recipe, "sample_windows", real)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000000", "step-000002"]
    stamp = (_ckpt(out, 2) / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(
        SinkscopeError, match="--save-at 1: this run resumes from step 2 and did not keep that step"
    ):
        train(cfg, out, data=tiny_texts(), progress=False, resume=True, save_at="0,1,2,4")
    train(cfg, out, data=tiny_texts(), progress=False, resume=True, save_at="0,2,4")
    assert (_ckpt(out, 2) / "model.safetensors").stat().st_mtime_ns == stamp  # kept, not rewritten
    for step in (0, 2, 4):  # the same weights as the uninterrupted run's
        a, b = _weights(_ckpt(out, step)), _weights(_ckpt(run, step))
        assert all(torch.equal(a[k], b[k]) for k in a), step
    train(
        cfg, out, data=tiny_texts(), progress=False, force=True, save_at="4"
    )  # a fresh start drops the old run's steps
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000004"]


@pytest.mark.parametrize(
    "spec,fragment",
    [
        ("0,x", "'x' is not a step"),
        ("-1", "step -1 is negative"),
        ("0,5", "step 5 is past the run's --steps 4"),
        (",", "names no step"),
    ],
)
def test_bad_save_at_is_a_one_line_error(tmp_path, capsys, spec, fragment):
    out = tmp_path / "run"
    argv = [
        "train",
        "--out",
        str(out),
        "--layers",
        "1",
        "--width",
        "16",
        "--heads",
        "2",
        "--steps",
        "4",
        "--quiet",
        "--save-at",
        spec,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("sinkscope: error: --save-at") and fragment in err[0]
    ), err
    assert not out.exists()


def test_dynamics_equals_measure_explain_intervene_on_each_checkpoint(run, tmp_path, capsys):
    out = tmp_path / "dyn"
    assert main(["dynamics", "--run", str(run), "--out", str(out), *INPUTS]) == 0
    printed = capsys.readouterr().out
    assert "onset:" in printed and "wrote" in printed
    s = json.loads((out / "dynamics.json").read_text())
    table = pd.read_csv(out / "dynamics.csv")
    assert list(table.step) == [0, 2, 4] and (out / "dynamics.png").stat().st_size > 0
    rows = s["checkpoints"]
    assert [r["step"] for r in rows] == [0, 2, 4]
    for r in rows:
        m = tmp_path / f"m{r['step']}"
        assert (
            main(["measure", "--model", r["checkpoint"], "--out", str(m), "--no-figures", *INPUTS])
            == 0
        )
        ms = json.loads((m / "summary.json").read_text())
        assert (
            r["sink"] == ms["bos_attention"]["all"]["mean"]
            and r["uniform"] == ms["uniform_baseline"]
        )
        assert r["sink_nl"] == ms["bos_attention"]["nl"]["mean"]
        assert (
            r["val_loss"]
            == json.loads((_ckpt(run, r["step"]) / "training.json").read_text())["val_loss"]
        )
    last = rows[-1]
    e = tmp_path / "e"
    assert (
        main(
            [
                "explain",
                "--model",
                last["checkpoint"],
                "--out",
                str(e),
                "--no-figures",
                "--weights-only",
                *INPUTS,
            ]
        )
        == 0
    )
    es = json.loads((e / "summary.json").read_text())
    assert last["align_index0"] == es["alignment"]["index0_mean_cos"]
    epe0 = pd.read_csv(e / "epe_index0.csv")["value"].abs()
    assert last["epe_max"] == pytest.approx(float(epe0.max()), rel=1e-6) and last[
        "epe_argmax"
    ] == int(epe0.idxmax())
    v = tmp_path / "v"
    assert (
        main(
            [
                "intervene",
                "--model",
                last["checkpoint"],
                "--out",
                str(v),
                "--no-figures",
                "--preset",
                "none",
                "--coords-rule",
                "paper",
                "--edit",
                "bq0=bq:0",
                "--edit",
                "p0_p1=pos:1",
                "--edit",
                "zero_wk=zero_wk",
                *INPUTS,
            ]
        )
        == 0
    )
    t1 = json.loads((v / "summary.json").read_text())["table1"]["mid"]["all"]
    for k in ("bq0", "p0_p1", "zero_wk"):
        assert last[f"pct_{k}"] == pytest.approx(t1[k]["pct"], rel=1e-12), k
    # the onset: the first step above twice the uniform level
    above = [r["step"] for r in rows if r["sink"] > 2 * rows[0]["uniform"]]
    assert s["threshold"] == 2 * rows[0]["uniform"] and s["onset_step"] == (
        above[0] if above else None
    )
    assert all(abs(r["full_vs_model"]) < 1e-5 for r in rows)


def test_dynamics_python_api_threshold_and_steps(run):
    from sinkscope.stages.runner import RunOptions
    from sinkscope.studies.dynamics import dynamics, run_checkpoints

    ckpts = run_checkpoints(run)
    r = dynamics(
        list(reversed(ckpts[1:])),
        RunOptions(per_domain=2, progress=False),
        steps=[40, 20],
        threshold=0.0,
    )
    assert (
        list(r.frame.step) == [20, 40] and r.onset() == 20
    )  # sorted by step; every sink exceeds 0
    assert "onset: step 20" in r.markdown() and r.summary()["threshold_rule"].startswith("given")


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--run", "RUN-EMPTY"], "has no checkpoints"),
        (["--checkpoints", "PLAIN"], "records no training step"),
        (["--checkpoints", "CKPT", "--steps", "1,2"], "2 steps for 1 checkpoints"),
        (["--checkpoints", "CKPT,CKPT2", "--steps", "5,5"], "step 5 appears twice"),
        (["--run", "RUN", "--steps", "1"], "--steps goes with --checkpoints"),
        (["--run", "RUN", "--threshold", "2"], "--threshold 2.0 must be a number in [0, 1]"),
    ],
)
def test_dynamics_bad_input_is_a_one_line_error(run, tmp_path, capsys, args, fragment):
    (tmp_path / "empty").mkdir()
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    paths = {
        "RUN-EMPTY": str(tmp_path / "empty"),
        "PLAIN": str(plain),
        "RUN": str(run),
        "CKPT": str(_ckpt(run, 2)),
        "CKPT2": str(_ckpt(run, 4)),
    }
    args = [",".join(paths.get(p, p) for p in a.split(",")) for a in args]
    out = tmp_path / "out"
    assert main(["dynamics", *args, "--out", str(out), *INPUTS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sinkscope: error:") and fragment in err[0], err
    assert not out.exists()
