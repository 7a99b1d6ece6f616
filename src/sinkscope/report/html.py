"""``report.html`` of ``sinkscope reproduce``: one self-contained page (figures embedded as data
URIs, no external files, scripts or fonts) built from the stage records under ``DIR/stages``.

The page checks its own images on load and writes the count into ``<body data-images="k/n">``
and the footer, so a headless browser can tell a broken figure from a loaded one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from ..io import write_text_atomic
from .tables import SCRIPT, _e, _f, _img, _table  # noqa: F401  (report.sweep and tests use them)

if TYPE_CHECKING:
    from ..data import TokenizedInputs
    from ..models import SinkModel
    from .records import FactsRecord

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;max-width:1060px;margin:0 auto;padding:24px 28px 60px;background:#fbfbfa}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:36px 0 6px;padding-top:10px;border-top:1px solid #ddd}h3{font-size:16px;margin:18px 0 6px}
.sub{color:#566;margin:0 0 14px}.note{background:#fff6d6;border:1px solid #f0d98a;padding:8px 12px;border-radius:6px;margin:10px 0}
.glance{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:10px;margin:14px 0}
.card{background:#fff;border:1px solid #e3e3e3;border-radius:8px;padding:10px 12px}.card b{display:block;font-size:22px}.card span{color:#566;font-size:13px}
.status{font-size:13px;color:#566}.ran{color:#1a7f37}.cached{color:#0a58ca}.skipped{color:#b42318}
.reading{background:#fff;border-left:4px solid #c0392b;padding:8px 12px;margin:10px 0}
figure{margin:14px 0;background:#fff;border:1px solid #e6e6e6;border-radius:8px;padding:10px}figure img{max-width:100%;height:auto;display:block;margin:auto}
figcaption{font-size:13px;color:#445;margin-top:6px}
table.tbl{border-collapse:collapse;font-size:13px;margin:8px 0;background:#fff}table.tbl th,table.tbl td{border:1px solid #ddd;padding:3px 8px;text-align:left}table.tbl td.n{text-align:right;font-variant-numeric:tabular-nums}
table.tbl th{background:#f1f3f5}
tr.matches td{background:#eefbea}tr.differs td{background:#fff1f0}tr.notrun td{color:#889}
code{background:#f1f3f5;padding:1px 4px;border-radius:3px}details{margin:8px 0}ul.files{font-size:13px}
"""


# --- per-stage tables -------------------------------------------------------------------------


def _facts_tables(f) -> str:
    rows = [
        {
            "fact": "massive coordinates (interventions, W_K edits, Fig 5)",
            "value": ", ".join(map(str, f.massive_coords.coords or [])) or "none",
            "decided by": f.massive_coords.rule,
        }
    ]
    if f.gamma_coords is not None and f.gamma_coords != f.massive_coords:
        rows.append(
            {
                "fact": "γ's coordinates",
                "value": ", ".join(map(str, f.gamma_coords.coords or [])) or "none",
                "decided by": f.gamma_coords.rule,
            }
        )
    rows += [
        {
            "fact": "creating block",
            "value": "none" if f.creating_block is None else str(f.creating_block),
            "decided by": f.creating_block_rule,
        },
        {
            "fact": "effective query bias q̄",
            "value": "computed" if f.q_bar_computed else "not computed",
            "decided by": "mean query per layer × head (shared_query)",
        },
    ]
    return _table(pd.DataFrame(rows))


def facts_section(f: FactsRecord) -> str:
    """The facts step's tables (the report owns the facts: every stage reads them)."""
    return _facts_tables(f)


# --- the page ---------------------------------------------------------------------------------


def _glance(records: dict) -> list[tuple[str, str]]:
    cards = []
    m = records.get("measure")
    if m:
        a = m.bos_attention["all"]
        cards.append(
            (
                f"{a.mean:.3f}",
                f"BOS attention, layers {m.band_text} (uniform {m.uniform_baseline:.3f})",
            )
        )
    w = records.get("circuit_weights")
    if w and w.gamma and not w.gamma.zero:
        cards.append(
            (f"{w.gamma.ratio_of_means:.1f}×", f"|γ| on coords {w.gamma.coords} vs the rest")
        )
    iv = records.get("interventions")
    if iv:
        for rid, label in (("b", "left after b_Q := 0"), ("i", "left after zeroing the W_K rows")):
            c = iv.value(rid)
            if c:
                cards.append(
                    (f"{_f(c.pct, '.1f')}%", f"sink {label} ({_f(c.delta_ce, '+.3f')} nats)")
                )
    sq = records.get("shared_query")
    if sq:
        cards.append(
            (
                f"{sq.pooled['all'].shared_query_share:.0%}",
                "of index 0's advantage from the shared query q̄",
            )
        )
    return cards


def _paper_section(records: dict, model, inputs, run: dict) -> tuple[str, pd.DataFrame]:
    from .paper import is_gpt2_small, paper_vs_run

    gpt2 = is_gpt2_small(model.hf.config)
    paper_inputs = (
        inputs is not None
        and (
            str(inputs.spec) in ("paper", "paper-offline")
            or str(inputs.spec).startswith("paper-csv:")
        )
        and len(inputs) == 300
        and inputs.ids.shape[1] == 40
    )
    df = paper_vs_run(
        records,
        gpt2_small=gpt2,
        paper_inputs=paper_inputs,
        model_name=getattr(model, "name", "this model"),
    )
    counts = (
        df.status.map(
            lambda x: (
                x.split(" ")[0]
                if x.startswith(("not run", "not computed", "not applicable"))
                else x
            )
        )
        .value_counts()
        .to_dict()
    )
    if not gpt2:
        title = "The paper's GPT-2 small numbers beside this model"
        intro = (
            "This model is not GPT-2 small, so this is a reference table, not a reproduction: each row gives the paper's setting "
            "and this run's (layers, inputs, coordinates), and differences describe the model, not an error."
        )
        ref = df[df.status == "reference"][
            ["group", "quantity", "paper", "paper setting", "this run", "this run's setting"]
        ]
        return f'<h2 id="paper">{_e(title)}</h2><p>{intro}</p>' + _table(ref), df
    intro = (
        f"Every number of the study (GPT-2 small, paper-notes) beside this run's, each with its setting. <b>{counts.get('matches', 0)}</b> match "
        f"to the paper's rounding, <b>{counts.get('differs', 0)}</b> differ, <b>{counts.get('reference', 0)}</b> are shown for reference only "
        f"(their settings differ from the paper's), <b>{sum(counts.get(k, 0) for k in ('not',))}</b> could not be computed here (the row says why)."
    )
    if not paper_inputs and inputs is not None:
        intro += (
            " <b>These inputs are not the paper's 300 × 40 tokens</b>, so the forward-pass rows are a reference, not a reproduction; "
            "run with <code>--inputs paper</code> (or <code>paper-csv:FILE</code>) to compare them."
        )
    cls = lambda r: (
        "notrun"
        if r.status.startswith("not ")
        else {"matches": "matches", "differs": "differs"}.get(r.status, "")
    )  # noqa: E731
    body = (
        '<h2 id="paper">Paper vs this run</h2>'
        + f"<p>{intro}</p>"
        + _table(df.drop(columns=["stage"]), cls)
    )
    return body, df


def render(
    out: Path, model: SinkModel, inputs: TokenizedInputs | None, outcomes: Sequence[Any], run: dict
) -> tuple[str, pd.DataFrame]:
    """The page (header, contents, the paper table, one section per stage, the skipped stages,
    the run's settings) and the paper-vs-run table; GPT-2 small gets the paper table first."""
    from .paper import is_gpt2_small
    from .records import read_record

    records = {}
    for o in outcomes:
        if o.status in ("ran", "cached"):
            records[o.name] = _guard(
                o, read_record, o.record_type, o.record.get("summary", {}), o.name
            )
    gpt2 = is_gpt2_small(model.hf.config)
    paper_html, paper_df = _paper_section(records, model, inputs, run)
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>sinkscope reproduce: {_e(model.name)}</title><style>{CSS}</style><script>{SCRIPT}</script></head><body>"
        + _header(model, outcomes, run, records)
        + _contents(outcomes, gpt2)
        + (paper_html if gpt2 else "")
        + "".join(_stage_section(o, records, out) for o in outcomes)
        + _skipped_section(outcomes)
        + ("" if gpt2 else paper_html)
        + _run_section(outcomes, run)
        + "</body></html>\n"
    )
    return page, paper_df


def _header(model, outcomes, run: dict, records: dict) -> str:
    """The title, the run in one line, the run's notes and the at-a-glance cards."""
    info = run["model_info"]
    n = run["n_examples"]
    head = [
        f"<h1>sinkscope reproduce: {_e(model.name)}</h1>",
        f'<p class="sub">{_e(info.get("model_type", ""))}, {info.get("n_layers")} layers × {info.get("n_heads")} heads; '
        + (
            f"{n} inputs × {run['seq_len']} tokens from <code>{_e(run['inputs'])}</code>"
            if n
            else "no forward pass (weight-only run)"
        )
        + f"; finished {_e(run['finished'])}; stages computed in this run: {sum(o.status == 'ran' for o in outcomes)}, reused: {sum(o.status == 'cached' for o in outcomes)}</p>",
    ]
    for note in run.get("notes", []):
        head.append(f'<div class="note">{_e(note)}</div>')
    cards = _glance(records)
    if cards:
        head.append(
            '<div class="glance">'
            + "".join(
                f'<div class="card"><b>{_e(v)}</b><span>{_e(t)}</span></div>' for v, t in cards
            )
            + "</div>"
        )
    return "".join(head)


def _contents(outcomes, gpt2: bool) -> str:
    """The table of contents: the paper table first for GPT-2 small, last for any other model."""
    links = ([("paper", "paper vs this run")] if gpt2 else []) + [
        (o.name, o.name) for o in outcomes
    ]
    links += ([] if gpt2 else [("paper", "the paper's numbers, for reference")]) + [
        ("run", "settings, versions, timings")
    ]
    return "<p>Contents: " + " · ".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in links) + "</p>"


class _Failed:
    def __init__(self, why: str):
        self.why = why


def _guard(o, fn, *args):
    """``fn(*args)``; for a plugin's stage a failure becomes a note in its section (the rest of
    the report stands), for sinkscope's own it is the bug it is."""
    if o.source == "sinkscope":
        return fn(*args)
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - a plugin's report code must not lose the page
        return _Failed(
            f"this section could not be drawn (the plugin {o.source} raised "
            f"{type(e).__name__}: {e}); its files are under {o.dir}/"
        )


def _stage_section(o, records: dict, out: Path) -> str:
    """One stage's section: its status, reading, skipped parts, tables, figures and files."""
    sec = [f'<h2 id="{o.name}">{_e(o.title)}</h2>']
    if o.status == "ran":
        sec.append(f'<p class="status ran">computed in this run: {o.seconds:.1f} s</p>')
    elif o.status == "cached":
        sec.append(
            f'<p class="status cached">reused from the run of {_e(o.record.get("finished", "?"))} (same weights, inputs and settings; computed in {o.seconds:.1f} s)</p>'
        )
    else:
        sec.append(f'<p class="status skipped">{_e(o.status)}: {_e(o.reason)}</p>')
        return "".join(sec)
    rec = records[o.name]
    if isinstance(rec, _Failed):
        sec.append(f'<p class="status skipped">{_e(rec.why)}</p>')
        return "".join(sec)
    reading = _guard(o, o.reading, rec) if o.reading else ""
    if isinstance(reading, _Failed):
        sec.append(f'<p class="status skipped">{_e(reading.why)}</p>')
        reading = ""
    if reading:
        sec.append(f'<div class="reading">{_e(reading)}</div>')
    for sk in getattr(rec, "skipped", []):
        sec.append(f'<p class="status skipped">part skipped ({_e(sk.stage)}): {_e(sk.reason)}</p>')
    tables = _guard(o, o.section, rec) if o.section else ""
    sec.append(
        f'<p class="status skipped">{_e(tables.why)}</p>' if isinstance(tables, _Failed) else tables
    )
    d = out / o.dir
    for fname, caption in (o.record.get("figures") or {}).items():
        if (d / fname).exists():
            sec.append(
                f"<figure>{_img(d / fname, caption, href=f'{o.dir}/{fname}')}<figcaption>{_e(caption)}</figcaption></figure>"
            )
    files = o.record.get("tables") or {}
    if files:
        sec.append(
            '<ul class="files">'
            + "".join(
                f'<li><a href="{_e(o.dir)}/{_e(f)}">{_e(f)}</a>: {_e(c)}</li>'
                for f, c in files.items()
            )
            + "</ul>"
        )
    return "".join(sec)


def _skipped_section(outcomes) -> str:
    """The list of skipped (or not requested) stages with the reason, or nothing."""
    skipped = [o for o in outcomes if o.status in ("skipped", "not requested")]
    if not skipped:
        return ""
    return (
        '<h2 id="skipped">Skipped stages</h2><ul>'
        + "".join(f"<li><b>{_e(o.name)}</b> ({_e(o.status)}): {_e(o.reason)}</li>" for o in skipped)
        + "</ul>"
    )


def _run_section(outcomes, run: dict) -> str:
    """The page's tail: the run's settings, package versions and timings."""
    settings_df = pd.DataFrame(
        [{"setting": k, "value": str(v)} for k, v in run["settings"].items()]
        + [
            {"setting": "model source", "value": _source_text(run.get("model_source", {}))},
            {"setting": "dtype", "value": str(run.get("dtype", ""))},
            {"setting": "weights sha256", "value": run["weights_sha256"]},
            {"setting": "inputs sha256", "value": str(run["inputs_sha256"])},
            {"setting": "command", "value": run.get("command", "")},
        ]
    )
    vers_df = pd.DataFrame([{"package": k, "version": str(v)} for k, v in run["versions"].items()])
    time_df = pd.DataFrame(
        [
            {
                "stage": o.name,
                "status": o.status,
                "seconds": f"{o.seconds:.1f}" if o.status in ("ran", "cached") else "",
            }
            for o in outcomes
        ]
        + [
            {
                "stage": "this run, up to the report (loading excluded)",
                "status": "",
                "seconds": f"{run['seconds_this_run']:.1f}",
            }
        ]
    )
    return "".join(
        [
            '<h2 id="run">Settings, versions, timings</h2>',
            "<h3>Settings</h3>",
            _table(settings_df),
            "<h3>Versions</h3>",
            _table(vers_df),
            "<h3>Timings</h3>",
            _table(time_df),
            '<p class="status">Written by <code>sinkscope reproduce</code>; every figure is embedded in this file. '
            'Per-stage CSV / JSON results sit under <code>stages/</code>. <span id="image-check">figures not checked (scripts off)</span></p>',
        ]
    )


def _source_text(src: dict) -> str:
    """The model's source in one phrase: spec or path, with the hub revision and commit; a model
    loaded from memory by its class (and the name or path it was loaded from).

    >>> _source_text({"kind": "hf", "spec": "gpt2", "revision": "main", "commit": "607a30d"})
    'gpt2@main (commit 607a30d)'
    >>> _source_text({"kind": "in-memory", "class": "GPT2LMHeadModel", "name_or_path": "gpt2"})
    'in memory: GPT2LMHeadModel (gpt2)'
    >>> _source_text({"kind": "in-memory", "class": "GPT2LMHeadModel", "name_or_path": None})
    'in memory: GPT2LMHeadModel'
    """
    if src.get("kind") == "in-memory":
        where = src.get("name_or_path")
        return f"in memory: {src.get('class', 'a model')}" + (f" ({where})" if where else "")
    text = str(src.get("spec") or src.get("path", ""))
    if src.get("revision"):
        text += f"@{src['revision']}"
    return text + (f" (commit {src['commit']})" if src.get("commit") else "")


def write_report(
    out: Path, model: SinkModel, inputs: TokenizedInputs | None, outcomes: Sequence[Any], run: dict
) -> Path:
    """Write ``out/report.html`` and ``out/paper_vs_run.csv`` atomically; return the report path."""
    page, paper_df = render(out, model, inputs, outcomes, run)
    write_text_atomic(out / "paper_vs_run.csv", paper_df.to_csv(index=False))
    write_text_atomic(out / "report.html", page)
    return out / "report.html"
