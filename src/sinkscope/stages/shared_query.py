"""``sinkscope shared-query``: the effective query bias q̄ (the part of every query that is the
same at all positions) and its share of index 0's logit advantage, any architecture
(:mod:`sinkscope.analysis.shared_query`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..registry import Stage, Step, register_stage
from ..report import sections
from ..report.records import SharedQueryRecord

if TYPE_CHECKING:
    import os

    import pandas as pd

    from ..analysis.facts import CircuitFacts
    from ..data import TokenizedInputs
    from ..models import SinkModel


@dataclass
class SharedQueryResult:
    """Per domain × layer × head shares (``frame``) and the band-pooled ones (``pooled``)."""

    model: str
    frame: pd.DataFrame  # domain, layer, head, shared_query_share, bq_share, index0_advantage
    pooled: dict  # domain -> {shared_query_share, mean_advantage, bq_share}
    band: tuple[int, int]
    has_query_bias: bool
    inputs: object = None
    extra: dict = field(default_factory=dict)

    tables = {"shared_query_per_head.csv": "per domain × layer × head"}

    def frames(self) -> dict:
        """The result's tables, by CSV name: ``shared_query_per_head``."""
        return {"shared_query_per_head": self.frame}

    def summary(self) -> dict:
        cols = ["shared_query_share", "bq_share", "index0_advantage"]
        per_layer = self.frame[self.frame.domain == "all"].groupby("layer")[cols].mean()
        return {
            "model": self.model,
            "pooled": self.pooled,
            "has_query_bias": self.has_query_bias,
            "layer_band": list(self.band),
            "per_layer": per_layer.reset_index().to_dict(orient="records"),
        }

    def write(
        self, out: str | os.PathLike[str], *, figures: bool = True, extra: dict | None = None
    ) -> dict[str, str]:
        """``shared_query_per_head.csv``, ``summary.json`` and, with ``figures``, the per-layer
        shares."""
        from pathlib import Path

        from ..io import write_json_atomic
        from ..report.circuit import shared_query_layers
        from ..report.formats import figure_name

        out = Path(out)
        self.frame.to_csv(out / "shared_query_per_head.csv", index=False, float_format="%.6g")
        write_json_atomic(out / "summary.json", self.summary() | (extra or {}))
        if not figures:
            return {}
        name = figure_name("shared_query")
        return {
            name: shared_query_layers(self.frame[self.frame.domain == "all"], self.band, out / name)
        }

    def format(self) -> str:
        p = self.pooled["all"]
        bq = "" if not self.has_query_bias else f"; literal b_Q share {p['bq_share']:.2f}"
        return (
            f"model {self.model}: layers {self.band[0]}..{self.band[1] - 1}: shared-query "
            f"share {p['shared_query_share']:.2f} of index 0's logit advantage "
            f"({p['mean_advantage']:.2f} logits){bq}"
        )


@register_stage
@dataclass
class SharedQueryConfig(Stage):
    """``sinkscope shared-query`` as a stage (reproduce's ``shared_query`` step)."""

    name = "shared-query"
    help = "the effective query bias q̄: its share of index 0's logit advantage (any architecture)"
    example = "sinkscope shared-query --per-domain 10"
    title = "The effective query bias (any architecture)"
    record = SharedQueryRecord
    steps = (Step("shared_query", order=60, after=()),)
    reading = staticmethod(sections.shared_query_reading)
    section = staticmethod(sections.shared_query_section)

    def compute(
        self,
        model: SinkModel,
        inputs: TokenizedInputs | None,
        facts: CircuitFacts | None = None,
        *,
        band: tuple[int, int] | None = None,
        batch_size: int = 32,
        progress: bool = True,
    ) -> SharedQueryResult:
        import numpy as np
        import torch

        from ..analysis.shared_query import shared_query
        from ..metrics import resolve_band

        band = resolve_band(band, model.adapter.n_layers)
        sq = shared_query(model, inputs, batch_size=batch_size, progress=progress)
        masks = inputs.domain_masks()
        pooled = {d: sq.pooled(band, torch.as_tensor(np.nonzero(m)[0])) for d, m in masks.items()}
        return SharedQueryResult(
            model.name, sq.frame(masks), pooled, band, sq.b_Q is not None, inputs
        )
