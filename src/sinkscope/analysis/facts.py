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
from typing import TYPE_CHECKING, Sequence

from ..errors import SinkscopeError

if TYPE_CHECKING:
    import torch

    from ..data import TokenizedInputs
    from ..models import SinkModel
    from .massive import ResidualProfile

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
        raise SinkscopeError(
            f"coordinate rule '{choice}' is unknown; use paper or one of {', '.join(RULES)}"
        )
    return choice


def epe_rule(k_sigma: float, rule: str = "sigma") -> str:
    """The text that names ``rule`` in the outputs."""
    if rule == "top3":
        return f"top-{PAPER_TOP_K} |EPE_0| (the paper's (i), intervention_i_zero_top_wk)"
    if rule == "sigma-top2":
        return (
            f"EPE_0 rule as the paper's γ code: |EPE_0[d]| > mean + {k_sigma:g} std of |EPE_0| (sample std), "
            f"else the top-{PAPER_FALLBACK_K} |EPE_0|"
        )
    return f"EPE_0 rule: |EPE_0[d]| > mean + {k_sigma:g} std of |EPE_0| (population std)"


def _top(vec, k: int) -> list[int]:
    import torch

    return sorted(int(i) for i in torch.topk(vec.abs().double(), min(k, vec.numel())).indices)


def pick_epe_coords(
    epe0: torch.Tensor, rule: str = "sigma", k_sigma: float = 3.0
) -> tuple[list[int], str]:
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
        return (
            _top(epe0, PAPER_FALLBACK_K),
            f"{text}: no coordinate passes, so the top-{PAPER_FALLBACK_K} |EPE_0| (the paper's fallback)",
        )
    return found, text


def choose_massive_coords(
    model: SinkModel,
    coords: Sequence[int] | None = None,
    *,
    k_sigma: float = 3.0,
    rule: str = "sigma",
    residual: tuple[Sequence[int], int | None] | None = None,
) -> MassiveCoords:
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
            return (
                MassiveCoords(tuple(found), text)
                if found
                else MassiveCoords(None, f"{text}: no coordinate passes")
            )
    if residual is not None and residual[0]:
        block = residual[1]
        after = f" after block {block}" if block is not None else ""
        return MassiveCoords(
            tuple(int(c) for c in residual[0]),
            f"residual-stream rule: index 0's massive activations{after}",
        )
    return MassiveCoords(
        None,
        f"none: {why}; give inputs (the residual-stream rule finds index 0's massive activations) or pass --coords",
    )


def residual_massive_coords(
    profile: ResidualProfile, band: tuple[int, int], creating_block: int | None
) -> tuple[list[int], list[float]]:
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
    gamma_coords: MassiveCoords | None = (
        None  # γ's coordinates (the paper's γ code has its own rule); None: ``coords``
    )

    def record(self) -> dict:
        """The facts as recorded in summaries and the report (no tensors)."""
        return {
            "massive_coords": self.coords.record(),
            "gamma_coords": (self.gamma_coords or self.coords).record(),
            "creating_block": self.creating_block,
            "creating_block_rule": self.creating_block_rule,
            "k_sigma": self.k_sigma,
        }

    def cache(self) -> dict:
        """The interventions' context cache: ``q_bar`` (q̄ edits) and ``creating_block`` (patch0)."""
        c = {"creating_block": self.creating_block}
        if self.q_bar is not None:
            c["q_bar"] = self.q_bar
        return c


CREATING_RULE = "the first block after which index 0's residual norm exceeds 5x the others' median"


def resolve_facts(
    model: SinkModel,
    inputs: TokenizedInputs | None = None,
    *,
    coords: Sequence[int] | None = None,
    k_sigma: float = 3.0,
    coords_rule: str = "paper",
    band: tuple[int, int] | None = None,
    q_bar: bool = False,
    profile: ResidualProfile | None = None,
    fallback: MassiveCoords | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> CircuitFacts:
    """Decide the run's :class:`CircuitFacts` (the one place that does).

    With ``inputs`` on a model that can run forward, one residual-stream pass (or ``profile``,
    when the caller has one) gives the creating block and the residual-stream rule's coordinates;
    ``q_bar=True`` also computes q̄ (one more pass; or pass the tensor when the caller has it).
    ``coords_rule`` picks the EPE_0 rules (:func:`resolve_rule`): ``paper`` gives the
    interventions the top-3 |EPE_0| and γ the paper's γ rule; ``sigma`` gives both the σ rule.
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
    mc = choose_massive_coords(
        model,
        coords,
        k_sigma=k_sigma,
        rule=resolve_rule(coords_rule, "interventions"),
        residual=residual,
    )
    gc = choose_massive_coords(
        model, coords, k_sigma=k_sigma, rule=resolve_rule(coords_rule, "gamma"), residual=residual
    )
    if mc.coords is None and fallback is not None:
        mc = fallback
    if gc.coords is None and fallback is not None:
        gc = fallback
    qb = None
    if q_bar is not None and not isinstance(q_bar, bool):
        qb = q_bar.float()
    elif q_bar and forward:
        from .shared_query import shared_query

        qb = shared_query(model, inputs, batch_size=batch_size, progress=progress).q_bar.float()
    return CircuitFacts(
        mc, block, block_rule, qb, profile if forward else None, k_sigma, None if gc == mc else gc
    )
