"""Circuit facts a run decides once and passes along: which residual coordinates are *massive*
(and by which rule), recorded in every output that uses them.

>>> MassiveCoords((138, 378), "--coords").record()
{'coords': [138, 378], 'rule': '--coords'}
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import SinkscopeError


@dataclass(frozen=True)
class MassiveCoords:
    """Massive coordinates and the rule that chose them (``coords`` None: no rule applied, and
    ``rule`` says why)."""

    coords: tuple[int, ...] | None
    rule: str

    def record(self) -> dict:
        return {"coords": list(self.coords) if self.coords is not None else None, "rule": self.rule}

    @property
    def list(self) -> list[int] | None:
        return list(self.coords) if self.coords else None


def epe_rule(k_sigma: float) -> str:
    return f"EPE_0 rule: |EPE_0[d]| > mean + {k_sigma:g} std of |EPE_0| (population std)"


def choose_massive_coords(model, coords: Sequence[int] | None = None, *, k_sigma: float = 3.0,
                          residual: tuple[Sequence[int], int | None] | None = None) -> MassiveCoords:
    """The one place a run picks its massive coordinates, in this order: the user's
    ``--coords``; the EPE_0 rule (models with learned positions and an MLP, the paper's rule);
    the residual-stream rule (index 0's massive activations, from a residual profile the caller
    computed: ``residual = (coords, creating block)``, any architecture); else none, with why."""
    if coords is not None:
        model.adapter.check_coords(coords)
        return MassiveCoords(tuple(int(c) for c in coords), "--coords")
    why = "the model has no learned positional embedding and MLP (no EPE)"
    ad = model.adapter
    if ad.position_embedding_module() is not None and ad.mlp_module(0) is not None:
        from .epe import effective_positional_embedding, massive_coords

        try:
            found, _ = massive_coords(effective_positional_embedding(ad, 1)[0], k_sigma)
        except SinkscopeError as e:  # a partial checkpoint without the layer-0 MLP
            why = str(e)
        else:
            return MassiveCoords(tuple(found), epe_rule(k_sigma)) if found else MassiveCoords(None, f"{epe_rule(k_sigma)}: no coordinate passes")
    if residual is not None and residual[0]:
        block = residual[1]
        after = f" after block {block}" if block is not None else ""
        return MassiveCoords(tuple(int(c) for c in residual[0]), f"residual-stream rule: index 0's massive activations{after}")
    return MassiveCoords(None, f"none: {why}; pass --coords")


def residual_massive_coords(profile, band: tuple[int, int], creating_block: int | None) -> tuple[list[int], list[float]]:
    """Index 0's massive coordinates where the sink layers read them: after the creating block
    if there is one, else entering the layer band; the Sun et al. rule (ratio 100, |a| > 20),
    relaxed to (20, 5) for small models whose activations never reach 20. At most 8."""
    block = creating_block if creating_block is not None else band[0] - 1
    for ratio, min_abs in ((100.0, 20.0), (20.0, 5.0)):
        coords, values = profile.massive(block, ratio=ratio, min_abs=min_abs)
        if coords:
            return coords[:8], values[:8]
    return [], []


@dataclass(frozen=True)
class CircuitFacts:
    """What a run decides once about one (model, inputs) and hands to every stage, figure and
    report section: the massive coordinates and the rule that chose them, the block after which
    index 0 stands out in the residual stream, and the effective query bias q̄ when computed.

    >>> f = CircuitFacts(MassiveCoords((5,), "--coords"), creating_block=0)
    >>> f.record()["massive_coords"], f.cache()
    ({'coords': [5], 'rule': '--coords'}, {'creating_block': 0})
    """

    coords: MassiveCoords
    creating_block: int | None = None
    creating_block_rule: str = "not computed (no forward pass)"
    q_bar: object = None  # torch.Tensor [layer, head, d_head] or None (not computed)
    profile: object = None  # the ResidualProfile the creating block came from, or None
    k_sigma: float = 3.0  # the EPE_0 rule's sigma (also the threshold explain's EPE table shows)

    def record(self) -> dict:
        """The facts as recorded in summaries and the report (no tensors)."""
        return {"massive_coords": self.coords.record(), "creating_block": self.creating_block,
                "creating_block_rule": self.creating_block_rule, "k_sigma": self.k_sigma}

    def cache(self) -> dict:
        """The interventions' context cache: ``q_bar`` (q̄ edits) and ``creating_block`` (patch0)."""
        c = {"creating_block": self.creating_block}
        if self.q_bar is not None:
            c["q_bar"] = self.q_bar
        return c


CREATING_RULE = "the first block after which index 0's residual norm exceeds 5x the others' median"


def resolve_facts(model, inputs=None, *, coords: Sequence[int] | None = None, k_sigma: float = 3.0,
                  band: tuple[int, int] | None = None, q_bar=False, profile=None,
                  fallback: MassiveCoords | None = None, batch_size: int = 32,
                  progress: bool = True) -> CircuitFacts:
    """Decide the run's :class:`CircuitFacts` (the one place that does).

    With ``inputs`` on a model that can run forward, one residual-stream pass (or ``profile``,
    when the caller has one) gives the creating block and the residual-stream rule's coordinates;
    ``q_bar=True`` also computes q̄ (one more pass; or pass the tensor when the caller has it).
    ``fallback`` (e.g. the paper's coordinates
    for a GPT-2 small checkpoint without its MLP) is used only when no rule finds coordinates.
    """
    from ..metrics import resolve_band

    band = resolve_band(band, model.adapter.n_layers)
    forward = inputs is not None and not model.adapter.missing_tensors()
    block, block_rule, residual = None, "not computed (no forward pass)", None
    if forward:
        if profile is None:
            from .massive import residual_profile

            profile = residual_profile(model, inputs, batch_size=batch_size, progress=progress)
        block = profile.creating_block()
        block_rule = CREATING_RULE + ("" if block is not None else ": never")
        residual = (residual_massive_coords(profile, band, block)[0], block)
    mc = choose_massive_coords(model, coords, k_sigma=k_sigma, residual=residual)
    if mc.coords is None and fallback is not None:
        mc = fallback
    qb = None
    if q_bar is not None and not isinstance(q_bar, bool):
        qb = q_bar.float()
    elif q_bar and forward:
        from .shared_query import shared_query

        qb = shared_query(model, inputs, batch_size=batch_size, progress=progress).q_bar.float()
    return CircuitFacts(mc, block, block_rule, qb, profile if forward else None, k_sigma)
