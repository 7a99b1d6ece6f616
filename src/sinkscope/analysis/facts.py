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
