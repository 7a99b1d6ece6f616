"""Circuit facts a run decides once and passes along: which residual coordinates are *massive*
(and by which rule), recorded in every output that uses them.

The rules on EPE_0 (:data:`RULES`); the paper's code uses a different one per analysis
(:data:`PAPER_RULES`), sinkscope's own is ``sigma`` everywhere:

=============  ================================================================================
``top3``       the 3 largest |EPE_0[d]|: the paper's (i) (``intervention_i_zero_top_wk``)
``sigma``      |EPE_0[d]| > mean + k std of |EPE_0| (population std); none passes: no coordinates
``sigma-top2`` the paper's γ code (Figs 4, 8): the same test with the sample std (torch's
               default), and the 2 largest |EPE_0[d]| when none passes
=============  ================================================================================

>>> MassiveCoords((138, 378), "--coords").record()
{'coords': [138, 378], 'rule': '--coords'}
>>> import torch
>>> v = torch.zeros(64); v[[3, 9, 40]] = torch.tensor([90.0, -6.0, 5.0])
>>> pick_epe_coords(v, "sigma"), pick_epe_coords(v, "top3")[0]
(([3], 'EPE_0 rule: |EPE_0[d]| > mean + 3 std of |EPE_0| (population std)'), [3, 9, 40])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import SinkscopeError

RULES = ("top3", "sigma", "sigma-top2")
PAPER_RULES = {"interventions": "top3", "gamma": "sigma-top2"}  # the paper's code, per analysis
PAPER_TOP_K = 3  # (i): the top-3 |EPE_0| coordinates
PAPER_FALLBACK_K = 2  # the γ code: the top-2 |EPE_0| coordinates when none passes the σ test


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


def resolve_rule(choice: str, use: str) -> str:
    """``paper`` -> the paper's rule for ``use`` (``interventions`` or ``gamma``); a rule name
    -> itself."""
    if choice == "paper":
        return PAPER_RULES[use]
    if choice not in RULES:
        raise SinkscopeError(f"coordinate rule '{choice}' is unknown; use paper or one of {', '.join(RULES)}")
    return choice


def epe_rule(k_sigma: float, rule: str = "sigma") -> str:
    """The text that names ``rule`` in the outputs."""
    if rule == "top3":
        return f"top-{PAPER_TOP_K} |EPE_0| (the paper's (i), intervention_i_zero_top_wk)"
    if rule == "sigma-top2":
        return (f"EPE_0 rule as the paper's γ code: |EPE_0[d]| > mean + {k_sigma:g} std of |EPE_0| (sample std), "
                f"else the top-{PAPER_FALLBACK_K} |EPE_0|")
    return f"EPE_0 rule: |EPE_0[d]| > mean + {k_sigma:g} std of |EPE_0| (population std)"


def _top(vec, k: int) -> list[int]:
    import torch

    return sorted(int(i) for i in torch.topk(vec.abs().double(), min(k, vec.numel())).indices)


def pick_epe_coords(epe0, rule: str = "sigma", k_sigma: float = 3.0) -> tuple[list[int], str]:
    """The coordinates of ``epe0`` (``[d_model]``) that ``rule`` picks, ascending, and the rule's
    text (saying so when the paper's top-2 fallback fired); ``[]`` when the σ test finds none."""
    from .epe import massive_coords

    text = epe_rule(k_sigma, rule)
    if rule == "top3":
        return _top(epe0, PAPER_TOP_K), text
    if rule not in RULES:
        raise SinkscopeError(f"coordinate rule '{rule}' is unknown; use one of {', '.join(RULES)}")
    found, _ = massive_coords(epe0, k_sigma, ddof=1 if rule == "sigma-top2" else 0)
    if not found and rule == "sigma-top2":
        return _top(epe0, PAPER_FALLBACK_K), f"{text}: no coordinate passes, so the top-{PAPER_FALLBACK_K} |EPE_0| (the paper's fallback)"
    return found, text


def choose_massive_coords(model, coords: Sequence[int] | None = None, *, k_sigma: float = 3.0, rule: str = "sigma",
                          residual: tuple[Sequence[int], int | None] | None = None) -> MassiveCoords:
    """The one place a run picks its massive coordinates, in this order: the user's
    ``--coords``; the EPE_0 ``rule`` (:data:`RULES`; models with learned positions and an MLP);
    the residual-stream rule (index 0's massive activations, from a residual profile the caller
    computed: ``residual = (coords, creating block)``, any architecture); else none, with why."""
    if coords is not None:
        model.adapter.check_coords(coords)
        return MassiveCoords(tuple(int(c) for c in coords), "--coords")
    if rule not in RULES:
        raise SinkscopeError(f"coordinate rule '{rule}' is unknown; use one of {', '.join(RULES)}")
    why = "the model has no learned positional embedding and MLP (no EPE)"
    ad = model.adapter
    if ad.position_embedding_module() is not None and ad.mlp_module(0) is not None:
        from .epe import effective_positional_embedding

        try:
            found, text = pick_epe_coords(effective_positional_embedding(ad, 1)[0], rule, k_sigma)
        except SinkscopeError as e:  # a partial checkpoint without the layer-0 MLP
            why = str(e)
        else:
            return MassiveCoords(tuple(found), text) if found else MassiveCoords(None, f"{text}: no coordinate passes")
    if residual is not None and residual[0]:
        block = residual[1]
        after = f" after block {block}" if block is not None else ""
        return MassiveCoords(tuple(int(c) for c in residual[0]), f"residual-stream rule: index 0's massive activations{after}")
    return MassiveCoords(None, f"none: {why}; pass --coords")
