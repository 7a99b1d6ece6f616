"""``reproduce``'s ``facts`` step: the run's circuit facts, decided once
(:func:`sinkscope.analysis.facts.resolve_facts`), cached as a record plus ``facts.safetensors``
(data only, no pickle), and handed to every later step."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SinkscopeError

if TYPE_CHECKING:
    from ..analysis.facts import CircuitFacts
    from .reproduce import Context
    from .reproduce_plan import PlannedStep


def facts_step() -> PlannedStep:
    """The built-in first step of every ``reproduce`` run."""
    from ..report.html import facts_section
    from ..report.readings import facts_reading
    from ..report.records import FactsRecord
    from .reproduce_plan import PlannedStep

    return PlannedStep(
        "facts",
        "Circuit facts: massive coordinates, creating block, q̄",
        False,
        ("band", "coords", "k_sigma"),
        (),
        run_facts,
        reads_inputs=True,
        record=FactsRecord,
        reading=facts_reading,
        section=facts_section,
    )


def _paper_fallback(model):
    """GPT-2 small whose checkpoint lacks the layer-0 MLP (no EPE): the paper's Fig 7 coordinates."""
    from ..analysis.facts import MassiveCoords
    from ..report.paper import PAPER_COORDS, is_gpt2_small

    if is_gpt2_small(model.hf.config) and model.adapter.missing_tensors():
        return MassiveCoords(
            tuple(PAPER_COORDS),
            "the paper's Fig 7 (this checkpoint lacks the layer-0 MLP that the EPE needs)",
        )
    return None


FACT_ARRAYS = ("norm0", "norm_other", "abs0", "median_abs", "signed0")


def run_facts(ctx: Context, tmp: Path) -> dict:
    """The run's circuit facts, decided once (analysis.facts.resolve_facts) and read by every
    later stage: massive coordinates and their rule, the creating block, q̄."""
    import torch
    from safetensors.torch import save_file

    from ..analysis.facts import resolve_facts

    st = ctx.settings
    facts = resolve_facts(
        ctx.model,
        ctx.inputs,
        coords=st.coords,
        k_sigma=st.k_sigma,
        band=ctx.band,
        q_bar=True,
        fallback=_paper_fallback(ctx.model),
        batch_size=st.batch_size,
        progress=ctx.progress,
    )
    tensors = {} if facts.q_bar is None else {"q_bar": facts.q_bar.float().contiguous()}
    if facts.profile is not None:
        tensors |= {
            k: torch.from_numpy(getattr(facts.profile, k)).contiguous() for k in FACT_ARRAYS
        }
    if tensors:
        save_file(tensors, str(tmp / "facts.safetensors"))  # data only, no pickle
    ctx.facts = facts
    return {
        "summary": facts.record() | {"q_bar_computed": facts.q_bar is not None},
        "figures": {},
        "tables": {"facts.safetensors": "q̄ and index 0's residual profile"} if tensors else {},
    }


def load_facts(ctx: Context, summary: dict) -> CircuitFacts:
    """The facts of a cached facts stage (its record and ``facts.safetensors``)."""
    from safetensors.torch import load_file

    from ..analysis.facts import CircuitFacts, MassiveCoords
    from ..analysis.massive import ResidualProfile

    path = ctx.stage_dir("facts") / "facts.safetensors"
    t = {}
    if path.exists():
        try:
            t = load_file(str(path))
        except Exception as e:  # truncated or edited by hand
            raise SinkscopeError(
                f"the cached {path} cannot be read ({type(e).__name__}); rerun with --recompute to recompute it"
            ) from None

    def coords(rec: dict) -> MassiveCoords:
        return MassiveCoords(
            tuple(rec["coords"]) if rec["coords"] is not None else None, rec["rule"]
        )

    mc, gc = (
        coords(summary["massive_coords"]),
        coords(summary.get("gamma_coords") or summary["massive_coords"]),
    )
    prof = (
        ResidualProfile(**{k: t[k].numpy() for k in FACT_ARRAYS})
        if all(k in t for k in FACT_ARRAYS)
        else None
    )
    return CircuitFacts(
        mc,
        summary["creating_block"],
        summary["creating_block_rule"],
        t.get("q_bar"),
        prof,
        summary.get("k_sigma", ctx.settings.k_sigma),
        None if gc == mc else gc,
    )
