"""The typed records the report reads (``report/records.py``) read every stage's live
summary: the records and the summaries the stages write cannot drift apart."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from sinkscope.report.records import RecordError, read_record, record_type
from sinkscope.studies import reproduce as rp


def _fields_present(rec, summary: dict, where: str) -> None:
    """Every field the record has a value for mirrors the summary's (nothing silently defaulted
    when the summary had it, numbers equal, NaN for JSON null)."""
    for f in dataclasses.fields(rec):
        if f.name not in summary:
            continue
        got, want = getattr(rec, f.name), summary[f.name]
        if dataclasses.is_dataclass(got):
            _fields_present(got, want, f"{where}.{f.name}")
        elif isinstance(got, float):
            assert (math.isnan(got) and want is None) or got == want, (where, f.name, got, want)
        elif isinstance(got, (int, str, bool)):
            assert got == want, (where, f.name, got, want)


def test_every_stage_summary_reads_as_its_record(embedded_run):
    out = embedded_run
    for name in rp.STAGE_NAMES:
        summary = json.loads((out / "stages" / name / "stage.json").read_text())["summary"]
        rec = read_record(name, summary)
        assert isinstance(rec, record_type(name)) and rec is not summary, name
        _fields_present(rec, summary, name)
    w = read_record(
        "circuit_weights",
        json.loads((out / "stages" / "circuit_weights" / "stage.json").read_text())["summary"],
    )
    assert (
        w.gamma is not None and w.gamma.coords and w.epe is not None
    )  # the parts the embedded model has


def test_a_record_of_another_shape_is_one_clear_error():
    with pytest.raises(RecordError, match=r"measure.bos_attention\[all\].mean is str, not"):
        read_record("measure", {"layer_band": [0, 1], "bos_attention": {"all": {"mean": "x"}}})
    with pytest.raises(RecordError, match="facts has no 'massive_coords'"):
        read_record("facts", {"creating_block": None, "creating_block_rule": "x"})
    f = read_record(
        "facts",
        {
            "massive_coords": {"coords": None, "rule": "none"},
            "creating_block": None,
            "creating_block_rule": "x",
        },
    )
    assert f.massive_coords.coords is None and f.gamma_coords is None


def test_every_command_is_a_stage_config_with_a_result():
    """Each stage's config and result have the interface stages/runner.py runs."""
    from sinkscope.stages.compare import CompareConfig, CompareResult
    from sinkscope.stages.explain import ExplainConfig, ExplainResult
    from sinkscope.stages.intervene import InterveneConfig, InterveneResult
    from sinkscope.stages.measure import MeasureConfig, MeasureResult
    from sinkscope.stages.mitigate import MitigateConfig, MitigateResult
    from sinkscope.stages.runner import StageConfig, StageResult

    def members(proto):
        return {n for n in dir(proto) if not n.startswith("_")} | set(
            getattr(proto, "__annotations__", {})
        )

    for cfg, res in (
        (MeasureConfig(), MeasureResult),
        (ExplainConfig(), ExplainResult),
        (InterveneConfig(), InterveneResult),
        (MitigateConfig(), MitigateResult),
        (CompareConfig(), CompareResult),
    ):
        assert all(hasattr(cfg, m) for m in members(StageConfig)), type(cfg).__name__
        assert all(hasattr(res, m) for m in members(StageResult)), (
            res.__name__
        )  # tables: a class attribute or property
        cfg.check()
