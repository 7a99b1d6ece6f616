"""``sinkscope explain``: the circuit analyses of the paper (Figs 1-4, 6-8) on one model.

The analyses run where the weights allow them (:mod:`sinkscope.analysis.circuit`); one that
cannot run is listed in ``summary["skipped"]`` with the reason. ``reproduce`` runs this stage
twice: the weight-only analyses (``circuit_weights``) and the forward-pass ones
(``circuit_forward``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import SinkscopeError
from ..parsing import parse_coords  # noqa: F401  (the --coords flag's parser, for plugins' reuse)
from ..registry import Stage, Step, option, register_stage
from ..report import sections
from ..report.records import ExplainRecord

if TYPE_CHECKING:
    import os
    from typing import Any

    from ..analysis.facts import CircuitFacts
    from ..data import TokenizedInputs
    from ..models import SinkModel


PAPER_COORDS = (138, 378, 447)  # the paper's Fig 7 coordinates (report.paper owns the numbers)


@dataclass
class ExplainResult:
    """The analyses of one model (:class:`sinkscope.analysis.circuit.Analyses`): ``summary()``,
    ``frames()`` (written as ``NAME.csv``), figures."""

    data: dict
    dataframes: dict = field(default_factory=dict)  # name -> pandas.DataFrame
    arrays: dict = field(default_factory=dict)  # name -> numpy array, for the figures
    inputs: object = None  # the TokenizedInputs of the forward analyses (None: weights only)
    k_sigma: float = 3.0

    def summary(self) -> dict:
        return self.data

    def frames(self) -> dict:
        """The result's tables, by CSV name (``gamma``, ``alignment``, ``delta_percentiles`` ...)."""
        return dict(self.dataframes)

    @property
    def tables(self) -> dict[str, str]:
        t = {f"{n}.csv": n.replace("_", " ") for n in self.dataframes}
        return t | (
            {"inputs.jsonl": "each input's text and token ids"} if self.inputs is not None else {}
        )

    def write(
        self, out: str | os.PathLike[str], *, figures: bool = True, extra: dict | None = None
    ) -> dict[str, str]:
        """The tables (CSV), ``inputs.jsonl`` (when there were inputs), ``summary.json`` (plus
        ``extra``) and, with ``figures``, every figure the analyses support, in ``out``; returns
        ``{figure file: caption}``. The CLI and reproduce's circuit stages write through here."""
        from pathlib import Path

        from ..io import write_json_atomic
        from ..report.circuit import explain_figures

        out = Path(out)
        for name, table in self.dataframes.items():
            table.to_csv(out / f"{name}.csv", index=False, float_format="%.7g")
        if self.inputs is not None:
            self.inputs.write_jsonl(out / "inputs.jsonl")
        write_json_atomic(out / "summary.json", self.data | (extra or {}))
        return explain_figures(self, out, k_sigma=self.k_sigma) if figures else {}

    def format(self) -> str:
        """The text ``sinkscope explain`` prints."""
        return format_explain(self.data)


def explain(model: SinkModel, inputs: TokenizedInputs | None = None, **kw: Any) -> ExplainResult:
    """Run every structural analysis the model's weights (and ``inputs``, if given) allow;
    the keywords are :func:`sinkscope.analysis.circuit.run_analyses`'."""
    from ..analysis.circuit import run_analyses

    a = run_analyses(model, inputs, **kw)
    return ExplainResult(a.data, a.dataframes, a.arrays, a.inputs, a.k_sigma)


def _at_paper_coords(res: ExplainResult, model) -> None:
    """reproduce's circuit_weights: EPE_0 at the paper's Fig 7 coordinates, where they exist."""
    epe0 = res.arrays.get("epe0")
    if epe0 is not None and epe0.shape[0] > max(PAPER_COORDS):
        res.data["epe"]["at_paper_coords"] = {str(c): float(epe0[c]) for c in PAPER_COORDS}


@register_stage
@dataclass
class ExplainConfig(Stage):
    """``sinkscope explain`` as a stage: the paper's circuit analyses (Figs 1-4, 6-8).
    ``weights`` / ``forward`` select the weight-only and the forward-pass analyses (reproduce runs
    them as two stages); ``forward=False`` is ``--weights-only``."""

    weights: bool = True
    forward: bool = option(
        True,
        "--weights-only",
        "only the analyses that need no inputs (EPE, b_Q / key alignment, γ): skip the "
        "forward-pass ones (Δ, EPE validation, residual stream); runs on a partial checkpoint",
        action="store_false",
    )
    seq_len: int | None = (
        None  # positions of the weight-only analyses (default: the inputs', else 40)
    )

    name = "explain"
    help = "the sink circuit: score decomposition, EPE, b_Q / key alignment (paper Figs 1-4, 6-8)"
    example = "sinkscope explain --per-domain 10"
    record = ExplainRecord
    needs_forward = False
    facts = ("coords",)
    steps = (
        Step(
            "circuit_weights",
            order=30,
            overrides={"forward": False},
            run_fields={"seq_len": "max_tokens"},
            title="The circuit in the weights: EPE, b_Q / key alignment, γ (Figs 2, 4, 7, 8)",
            reading=sections.circuit_weights_reading,
            section=sections.circuit_weights_section,
            # no b_Q: γ with q̄, from the inputs
            reads_inputs=lambda model: not model.adapter.info().has_query_bias,
            finish=_at_paper_coords,
        ),
        Step(
            "circuit_forward",
            order=40,
            overrides={"weights": False},
            forward=True,
            title="The circuit in the forward pass: Δ, EPE validation, where index 0 becomes special",
            reading=sections.circuit_forward_reading,
            section=sections.circuit_forward_section,
        ),
    )

    @property
    def weights_only(self) -> bool:
        return not self.forward

    def check(self) -> None:
        if not (self.weights or self.forward):
            raise SinkscopeError("explain needs the weight-only analyses, the forward ones or both")

    def compute(
        self,
        model: SinkModel,
        inputs: TokenizedInputs | None,
        facts: CircuitFacts | None = None,
        *,
        band: tuple[int, int] | None = None,
        batch_size: int = 32,
        progress: bool = True,
    ) -> ExplainResult:
        return explain(
            model,
            inputs if self.forward else None,
            band=band,
            batch_size=batch_size,
            progress=progress,
            weights=self.weights,
            forward=self.forward,
            facts=facts,
            seq_len=self.seq_len,
        )


def format_explain(s: dict) -> str:
    """An explain summary as text: γ, EPE, alignment, residual, Δ, decomposition, skipped."""
    from ..report.sections import epe_value
    from ..report.tables import fmt

    lines = [f"model {s['model']}: layers {s['layer_band'][0]}..{s['layer_band'][1] - 1}"]
    if "gamma" in s:
        g = s["gamma"]
        lab = (
            "γ"
            if s.get("gamma_query", "b_Q") == "b_Q"
            else "γ(q̄), with the effective query bias (no b_Q),"
        )
        lines.append(
            f"  |{lab}| on coords {g['coords']} ({s['coords_source']}): mean {g['massive']['mean']:.4f}, median {g['massive']['median']:.4f}, n={g['massive']['count']:,}"
            f"; other coords: mean {g['other']['mean']:.4f}, median {g['other']['median']:.4f}, n={g['other']['count']:,}  (ratio {g['ratio_of_means']:.1f}x)"
        )
    if "epe" in s:
        e = s["epe"]
        vals = ", ".join(
            f"{c}: {epe_value(v)}" for c, v in zip(e["massive_coords"], e["massive_values"])
        )
        lines.append(f"  EPE_0 massive coordinates: {vals}")
        if "validation_median_index0" in e:
            for what, v in (
                ("MLP only", e),
                ("full block 0, causal", e.get("validation_full_block")),
            ):
                if v:
                    lines.append(
                        f"  EPE validation cos ({what}): median {v['validation_median_index0']:.4f} at index 0, >= {v['validation_min_median_other']:.4f} elsewhere; "
                        f"global median {v['validation_global_median']:.4f} (all positions), {v['validation_global_median_other']:.4f} (positions >= 1)"
                    )
    if "alignment" in s:
        a = s["alignment"]
        lines.append(
            f"  cos(b_Q, W_K EPE_j): mean {a['index0_mean_cos']:+.3f} at index 0 vs {a['other_mean_cos']:+.3f} elsewhere"
        )
    if "residual" in s:
        r = s["residual"]
        vals = ", ".join(
            f"{c}: {fmt(v, '+.0f')}"
            for c, v in zip(r["massive_coords"][:6], r["massive_values"][:6])
        )
        where = (
            f"becomes special after block {r['creating_block']} (massive coords {vals})"
            if r["creating_block"] is not None
            else "never becomes special (norm ratio < 5x after every block)"
        )
        lines.append(
            f"  index 0 {where}; norm ratio peaks at {r['max_norm_ratio']:.0f}x after block {r['max_norm_ratio_block']}"
        )
    if "delta" in s:
        d = s["delta"]
        lines.append(
            f"  re-centred Δ: mean {d['index0_mean']:.2f} at index 0 vs {d['other_mean']:.2f} elsewhere; index-0 p10 above every other p90 in layers {d['layers_index0_p10_above_all_other_p90']}"
        )
    if "decomposition_check" in s:
        lines.append(
            f"  decomposition: 4 terms sum to the model's scores within {s['decomposition_check']['max_abs_error']:.1e}"
        )
    for sk in s["skipped"]:
        lines.append(f"  skipped {sk['stage']}: {sk['reason']}")
    return "\n".join(lines)
