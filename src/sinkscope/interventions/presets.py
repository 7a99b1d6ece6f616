"""Presets: a named protocol that owns its interventions, labels, coordinate rule, random
draw and dtype policy. ``--preset`` takes its choices from :data:`PRESETS`
everywhere (``intervene``, ``sweep``); nothing else interprets a preset's name.

>>> p = get_preset("paper")
>>> p.coords_rule(None, None), p.coords_rule(None, 2.0), p.dtype("auto"), p.draw(None)
('paper', 'sigma', 'float32', 'paper')
>>> sorted(get_preset("none").interventions())
['baseline']
>>> paper_presets(7, random="sinkscope")["j"].describe()
'zero 3 random W_K rows per layer (seed 7)'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SinkscopeError
from .labels import PAPER_LABELS, PAPER_SPECS, PAPER_TABLE1, RANDOM_DRAWS  # noqa: F401

PAPER_RANDOM_SEED = 42  # the paper's code: random.seed(42) before each example's (j)


@dataclass(frozen=True)
class Preset:
    """A protocol: ``specs`` (``{id: --edit spec}``, ``{seed}`` / ``{draw}`` filled in), their
    ``labels`` (Table 1's rows), the coordinate rule and (j)'s draw it implies, its dtype
    (``float32``: the paper's numbers are float32; else the model's own). The layer band is the
    run's (``--layers``; default the paper's 3:11 of 12, scaled) under every preset."""

    name: str
    help: str
    specs: dict[str, str]
    labels: dict[str, str] = field(default_factory=dict)
    rule: str = "sigma"  # coordinate rule without --coords-rule / --sigma
    random_draw: str = "sinkscope"
    float32: bool = False

    def coords_rule(self, given: str | None, sigma: float | None) -> str:
        """The coordinate rule of the W_K edits: :func:`choose_rule` with this preset's."""
        return choose_rule(given, sigma, self.rule)

    def draw(self, given: str | None) -> str:
        """(j)'s random draw (``--random``), for presets that have a (j)."""
        if given is not None and "j" not in self.specs:
            raise SinkscopeError(
                f"--random chooses the draw of the paper preset's (j), and "
                f"--preset is {self.name}; write the draw in --edit instead, "
                "e.g. rand=random_wk:3:42:paper"
            )
        if given is not None and given not in RANDOM_DRAWS:
            raise SinkscopeError(f"--random {given} is unknown; use paper or sinkscope")
        return given or self.random_draw

    def dtype(self, dtype: str) -> str:
        """The run's dtype: ``auto`` becomes float32 under a float32 preset."""
        return "float32" if dtype == "auto" and self.float32 else dtype

    def interventions(self, seed: int = 0, random: str | None = None) -> dict:
        """``{id: Intervention}`` in the preset's order."""
        from .spec import edits

        draw = random or self.random_draw  # checked by draw() where the user chose it
        j_seed = PAPER_RANDOM_SEED if draw == "paper" else seed
        return edits({k: v.format(seed=j_seed, draw=draw) for k, v in self.specs.items()})


def choose_rule(given: str | None, sigma: float | None, default: str) -> str:
    """The coordinate rule of a run's W_K edits: the one given (``--coords-rule``), else
    ``sigma`` when ``--sigma`` is given, else ``default``. ``paper`` takes the top-3 |EPE_0|, so
    ``--coords-rule paper`` with ``--sigma`` contradicts itself: one line says so.

    >>> choose_rule(None, 2.0, "paper"), choose_rule(None, None, "paper")
    ('sigma', 'paper')
    """
    if given == "paper" and sigma is not None:
        raise SinkscopeError(
            "--sigma sets the sigma rule, but --coords-rule paper takes the top-3 |EPE_0|; "
            "drop one of them"
        )
    if given is not None:
        return given
    return "sigma" if sigma is not None else default


PRESETS: dict[str, Preset] = {}


def register_preset(p: Preset) -> Preset:
    PRESETS[p.name] = p
    return p


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise SinkscopeError(f"--preset {name} is unknown; use {' or '.join(PRESETS)}")
    return PRESETS[name]


register_preset(
    Preset(
        "paper",
        "the paper's ten interventions (a)..(j) of Table 1, float32",
        dict(PAPER_SPECS),
        dict(PAPER_LABELS),
        rule="paper",
        random_draw="paper",
        float32=True,
    )
)
register_preset(
    Preset(
        "none", "the baseline only (intervene adds --edit interventions)", {"baseline": "baseline"}
    )
)


def paper_presets(seed: int = 0, random: str = "paper") -> dict:
    """``{"a": Identity(), "b": ScaleQueryBias(0), ...}`` in the paper's order.

    ``random``: (j)'s draw: ``paper`` (the paper's code: seed 42, ``randint`` 3 times per layer,
    repeats and massive rows allowed; ``seed`` unused) or ``sinkscope`` (``random.Random(seed)``,
    3 distinct non-massive rows per layer).

    >>> paper_presets(7)["j"].describe()
    "zero 3 random W_K rows per layer (the paper's draw: seed 42 before each example, repeats allowed)"
    """
    return PRESETS["paper"].interventions(seed, random)
