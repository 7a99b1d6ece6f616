"""Training dynamics (issue 15): the sink circuit over the checkpoints of one training run.

For each checkpoint (``sinkscope train --save-at``: ``RUN/checkpoints/step-NNNNNN/``), on the
same inputs, one row of:

* ``sink``: the paper metric (attention to index 0 from the second-half queries, layer band,
  all inputs and per domain), :class:`~sinkscope.stages.measure.MeasureConfig`'s result;
* ``epe_max``: max_d |EPE_0[d]| (the effective positional embedding of index 0), and
  ``align_index0`` / ``align_other``: cos(b_Q, W_K·EPE_j) at index 0 and elsewhere, from
  :class:`~sinkscope.stages.explain.ExplainConfig`'s weight-only analyses;
* ``pct_bq0``, ``pct_p0_p1``, ``pct_zero_wk``: the sink left (% of the checkpoint's own
  baseline) under b_Q := 0, p_0 := p_1 and zeroed W_K rows of the run's massive coordinates
  (the paper's (b), (c), (i); :class:`~sinkscope.stages.intervene.InterveneConfig`);
* ``share_shared`` / ``share_content`` / ``share_bq``: the query pathways' shares of index 0's
  attention (:mod:`sinkscope.analysis.pathways`).

The circuit facts (massive coordinates, q̄) are decided once per checkpoint
(:func:`~sinkscope.stages.runner.facts_for`) and handed to every stage. The **onset step** is
the first saved step whose sink exceeds a threshold: by default twice the uniform level (what a
head attending evenly to its causal prefix gives index 0 over the query window), or a value given.

>>> import pandas as pd
>>> DynamicsResult(pd.DataFrame({"step": [0, 100, 200], "sink": [0.03, 0.05, 0.4]}), {"threshold": 0.068}).onset()
200
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Sequence

from ..errors import SinkscopeError

# the three interventions of the trajectories, in the --edit language (paper's (b), (c), (i))
from ..interventions.labels import DYNAMICS_EDITS as EDITS  # noqa: E402
from ..interventions.labels import DYNAMICS_TEXT as EDIT_TEXT  # noqa: E402,F401
from ..stages.runner import RunOptions

if TYPE_CHECKING:
    import os

    import pandas as pd

    from ..stages.runner import Ran

ONSET_FACTOR = 2.0  # default threshold: this many times the uniform level
STAGE = SimpleNamespace(facts=("coords", "q_bar"))  # the circuit facts the trajectories read


def checkpoint_step(path: str | Path) -> int | None:
    """The training step a checkpoint directory records (``sinkscope train --save-at``:
    ``config.json`` ``sinkscope_step``, else ``training.json`` ``step``); None if none."""
    p = Path(path)
    for name, key in (("config.json", "sinkscope_step"), ("training.json", "step")):
        try:
            v = json.loads((p / name).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def run_checkpoints(run: str | Path) -> list[str]:
    """The kept steps of a training run directory, ``RUN/checkpoints/step-*``, in step order."""
    from ..training.config import CHECKPOINTS

    found = sorted(
        d for d in (Path(run) / CHECKPOINTS).glob("step-*") if (d / "config.json").exists()
    )
    if not found:
        raise SinkscopeError(
            f"--run {run} has no checkpoints ({run}/{CHECKPOINTS}/step-*); train it with --save-at, e.g. --save-at 0,100,200,400"
        )
    return [str(d) for d in found]


def _steps(checkpoints: Sequence[str], steps: Sequence[int] | None) -> list[int]:
    if not checkpoints:
        raise SinkscopeError("no checkpoints given; pass --run RUN or --checkpoints DIR,DIR,...")
    if steps is not None:
        steps = [int(s) for s in steps]
        if len(steps) != len(checkpoints):
            raise SinkscopeError(
                f"--steps names {len(steps)} steps for {len(checkpoints)} checkpoints; give one step per checkpoint"
            )
    else:
        steps = [checkpoint_step(c) for c in checkpoints]
        missing = [c for c, s in zip(checkpoints, steps) if s is None]
        if missing:
            raise SinkscopeError(
                f"checkpoint {missing[0]} records no training step (config.json sinkscope_step); "
                "pass --steps with one step per checkpoint"
            )
    dup = sorted({s for s in steps if steps.count(s) > 1})
    if dup:
        raise SinkscopeError(
            f"step {dup[0]} appears twice among the checkpoints; give each step once"
        )
    return steps


def _one(model, inputs, opts: RunOptions, step: int, ckpt: str) -> dict:
    import numpy as np

    """The row of one checkpoint: every stage on the same (model, inputs, facts)."""
    from ..analysis.pathways import pathways
    from ..stages.explain import ExplainConfig
    from ..stages.intervene import InterveneConfig
    from ..stages.measure import MeasureConfig
    from ..stages.runner import facts_for

    t0 = time.perf_counter()
    kw = dict(
        band=opts.band, batch_size=opts.batch_size, progress=False
    )  # one bar, over the checkpoints
    facts = facts_for(STAGE, model, inputs, replace(opts, progress=False))
    m = MeasureConfig().compute(model, inputs, facts, **kw)
    s = m.summary()
    row = {
        "step": step,
        "checkpoint": ckpt,
        "sink": s["bos_attention"]["all"]["mean"],
        "sink_se": s["bos_attention"]["all"]["se"],
    }
    row |= {f"sink_{d}": v["mean"] for d, v in s["bos_attention"].items() if d != "all"}
    row |= {
        "sink_all_layers": s["bos_attention_all_layers"]["all"]["mean"],
        "uniform": s["uniform_baseline"],
        "val_loss": _recorded(ckpt, "val_loss"),
    }
    e = ExplainConfig(forward=False, seq_len=m.seq_len).compute(model, None, facts, **kw)
    epe0 = e.arrays.get("epe0")
    al = e.summary().get("alignment", {})
    row |= {
        "epe_max": float(np.abs(epe0).max()) if epe0 is not None else np.nan,
        "epe_argmax": int(np.abs(epe0).argmax()) if epe0 is not None else -1,
        "align_index0": al.get("index0_mean_cos", np.nan),
        "align_other": al.get("other_mean_cos", np.nan),
    }
    iv = InterveneConfig(
        preset="none", edits=tuple(f"{k}={v}" for k, v in EDITS.items()), max_tokens=opts.max_tokens
    )
    res = iv.compute(model, inputs, facts, **kw)
    t = res.table()
    t = t[(t.scope == "mid") & (t.dataset == "all")].set_index("intervention")
    row |= {
        f"pct_{k}": float(t.loc[k, "pct_baseline"]) if t.loc[k, "applicable"] else np.nan
        for k in EDITS
    }
    row["coords"] = " ".join(map(str, res.coords or [])) or "none"
    p = pathways(
        model, inputs, q_bar=facts.q_bar, batch_size=opts.batch_size, progress=False
    ).pooled(m.band)
    row |= {
        k: p.get(k, np.nan)
        for k in (
            "attn_full",
            "attn_shared",
            "attn_content",
            "attn_bq",
            "share_shared",
            "share_content",
            "share_bq",
        )
    }
    row["full_vs_model"] = p["full_vs_model_max_abs"]
    row["seconds"] = round(time.perf_counter() - t0, 2)
    row["_meta"] = {
        "inputs": inputs.record(),
        "band": list(m.band),
        "facts": facts.record(),
        "model_info": s["model_info"],
    }
    return row


def _recorded(ckpt: str, key: str) -> float:
    """A readout the training run recorded with the checkpoint (``training.json``), or NaN."""
    try:
        v = json.loads((Path(ckpt) / "training.json").read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return float("nan")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")


@dataclass
class DynamicsResult:
    """One row per checkpoint (``frame``, sorted by step) and the run's settings (``meta``:
    ``threshold``, ``threshold_rule``, inputs, band, ...)."""

    frame: pd.DataFrame
    meta: dict = field(default_factory=dict)
    seconds: float = 0.0
    loads: dict = field(default_factory=dict)  # {checkpoint name: SinkModel.record()}

    tables = {
        "dynamics.csv": "one row per checkpoint: step, sink, EPE max, alignment, interventions, pathways"
    }
    summary_file = "dynamics.json"

    def frames(self) -> dict:
        """The result's tables, by CSV name: ``dynamics``."""
        return {"dynamics": self.frame}

    def onset(self) -> int | None:
        """The first saved step whose sink exceeds the threshold (None: never)."""
        above = self.frame[self.frame["sink"] > self.meta["threshold"]]
        return int(above["step"].iloc[0]) if len(above) else None

    def summary(self) -> dict:
        f = self.frame
        peaks = {
            c: {"step": int(f.loc[f[c].idxmax(), "step"]), "value": float(f[c].max())}
            for c in ("sink", "epe_max")
            if c in f and f[c].notna().any()
        }
        return self.meta | {
            "onset_step": self.onset(),
            "peaks": peaks,
            "seconds": round(self.seconds, 2),
            "checkpoints": f.to_dict(orient="records"),
        }

    def write(
        self, out: str | os.PathLike[str], *, figures: bool = True, extra: dict | None = None
    ) -> dict[str, str]:
        """``dynamics.csv``, ``dynamics.json`` (:meth:`summary` plus ``extra``) and, with
        ``figures``, ``dynamics.png`` in the directory ``out``; returns ``{figure: caption}``."""
        from ..io import write_json_atomic

        out = Path(out)
        self.frame.to_csv(out / "dynamics.csv", index=False, float_format="%.6g")
        write_json_atomic(out / "dynamics.json", self.summary() | (extra or {}))
        if not figures:
            return {}
        from ..report.dynamics import dynamics_figure
        from ..report.formats import figure_path

        path = dynamics_figure(self, figure_path(out, "dynamics"))
        return {
            path.name: "The sink circuit over training, one point per saved checkpoint: sink, EPE max, b_Q / EPE-key "
            "alignment, intervention efficacy, query pathways' shares."
        }

    def markdown(self) -> str:
        """The table as Markdown (what the CLI prints and docs/dynamics.md shows)."""
        import pandas as pd

        cols = [
            ("step", "step", "d"),
            ("sink", "sink", ".3f"),
            ("val_loss", "val loss", ".3f"),
            ("epe_max", "EPE max", ".2f"),
            ("align_index0", "cos(b_Q, k(EPE_0))", "+.3f"),
            ("pct_bq0", "b_Q:=0 %", ".1f"),
            ("pct_p0_p1", "p0:=p1 %", ".1f"),
            ("pct_zero_wk", "W_K rows %", ".1f"),
            ("share_shared", "q̄ share", ".2f"),
            ("share_content", "content share", ".2f"),
            ("share_bq", "b_Q share", ".2f"),
        ]
        cols = [c for c in cols if c[0] in self.frame]
        lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
        for _, r in self.frame.iterrows():
            lines.append(
                "| "
                + " | ".join("-" if pd.isna(r[c]) else format(r[c], f) for c, _, f in cols)
                + " |"
            )
        onset = self.onset()
        lines.append("")
        lines.append(
            f"onset: {'step ' + str(onset) if onset is not None else 'never'} (first saved step with sink > "
            f"{self.meta['threshold']:.3f}, {self.meta['threshold_rule']})"
        )
        return "\n".join(lines)

    def format(self) -> str:
        return self.markdown()


def dynamics(
    checkpoints: Sequence[str],
    opts: RunOptions | None = None,
    *,
    steps: Sequence[int] | None = None,
    threshold: float | None = None,
) -> DynamicsResult:
    """The trajectories over ``checkpoints`` (model specs: ``--save-at`` directories, or any
    model with ``steps`` given), each on the inputs ``opts`` describe (:class:`RunOptions`:
    inputs, per domain, length, BOS, band, coordinate rule, device, batch size, progress; its
    ``model`` and ``out`` are not used). ``threshold``: the onset level (default
    :data:`ONSET_FACTOR` × the uniform level)."""
    import pandas as pd
    from tqdm.auto import tqdm

    from ..errors import check_number
    from ..stages.runner import load_each

    opts = opts or RunOptions()
    checkpoints = [str(c) for c in checkpoints]
    step_of = dict(zip(checkpoints, _steps(checkpoints, steps)))
    if threshold is not None:
        check_number("--threshold", threshold, 0.0, 1.0)
    order = sorted(checkpoints, key=step_of.get)
    t0 = time.perf_counter()
    rows, loads = [], {}
    bar = tqdm(total=len(order), desc="dynamics", unit="checkpoint", disable=not opts.progress)
    for ckpt, (model, inputs) in zip(order, load_each(opts, order)):
        loads[model.name] = (
            model.record()
        )  # how each checkpoint was loaded (dtype, source), for the summary
        rows.append(_one(model, inputs, opts, step_of[ckpt], ckpt))
        bar.set_postfix({"step": step_of[ckpt], "sink": f"{rows[-1]['sink']:.3f}"}, refresh=False)
        bar.update(1)
        del model
    bar.close()
    metas = [r.pop("_meta") for r in rows]
    uniform = rows[0]["uniform"]
    meta = {
        "model": metas[0]["model_info"],
        "inputs": metas[0]["inputs"],
        "layer_band": metas[0]["band"],
        "facts": {str(r["step"]): m["facts"] for r, m in zip(rows, metas)},
        "threshold": threshold if threshold is not None else ONSET_FACTOR * uniform,
        "threshold_rule": "given (--threshold)"
        if threshold is not None
        else f"{ONSET_FACTOR:g} x the uniform level {uniform:.4f}",
        "edits": {k: f"{v} ({EDIT_TEXT[k]})" for k, v in EDITS.items()},
        "n_checkpoints": len(rows),
    }
    return DynamicsResult(pd.DataFrame(rows), meta, time.perf_counter() - t0, loads)


def run_dynamics(
    checkpoints: Sequence[str],
    opts: RunOptions,
    *,
    steps: Sequence[int] | None = None,
    threshold: float | None = None,
) -> Ran:
    """``sinkscope dynamics``: check ``opts.out`` first, compute, write it atomically
    (:class:`~sinkscope.stages.runner.Ran`)."""
    from ..stages.runner import _write, preflight, settle_out

    settings = {"steps": None if steps is None else list(steps), "threshold": threshold}
    settle_out("dynamics", settings, opts, list(checkpoints))
    preflight(opts, models=list(checkpoints))  # specs, sizes, options and --out, before torch
    t0 = time.perf_counter()
    res = dynamics(checkpoints, opts, steps=steps, threshold=threshold)
    return _write(res, res.loads, opts, t0)


__all__ = ["DynamicsResult", "checkpoint_step", "dynamics", "run_checkpoints", "run_dynamics"]
