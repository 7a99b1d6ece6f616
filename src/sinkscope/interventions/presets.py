"""The ten interventions of the paper's Table 1, by their letters (a)..(j)."""
from __future__ import annotations

from ..errors import SinkscopeError
from .base import Intervention
from .spec import edits

PAPER_LABELS = {
    "a": "baseline",
    "b": "b_Q := 0 in every layer (b_K, b_V kept)",
    "c": "index 0 gets p_1 instead of p_0",
    "d": "swap EPE_0 / EPE_1 components after the layer-0 MLP",
    "e": "the same swap with raw positional directions (control)",
    "f": "token embedding at index 0 := 0 (control)",
    "g": "skip the MLP in every layer",
    "h": "no positional embeddings",
    "i": "zero W_K input rows of the run's coordinates (the paper's: top-3 |EPE_0|), every layer",
    "j": "zero 3 random W_K input rows per layer (control)",
}

# the paper's Table 1 (BOS attention, layers 4..11, 300 texts): mean and % of baseline
PAPER_TABLE1 = {
    "a": (0.563, 100.0), "b": (0.251, 44.7), "c": (0.017, 3.0), "d": (0.035, 6.2), "e": (0.557, 99.0),
    "f": (0.561, 99.7), "g": (0.283, 50.3), "h": (0.099, 17.5), "i": (0.367, 65.2), "j": (0.563, 100.0),
}


PAPER_SPECS = {  # the ten interventions in the --edit language
    "a": "baseline", "b": "bq:0", "c": "pos:1", "d": "swap_epe", "e": "swap_pe", "f": "zero_tok0", "g": "skip_mlp",
    "h": "no_pos", "i": "zero_wk", "j": "random_wk:3:{seed}:{draw}",
}
PAPER_RANDOM_SEED = 42  # the paper's code: random.seed(42) before each example's (j)


def paper_presets(seed: int = 0, random: str = "paper") -> dict[str, Intervention]:
    """``{"a": Identity(), "b": ScaleQueryBias(0), ...}`` in the paper's order.

    ``random``: the draw of (j): ``paper`` (the paper's code: seed 42, ``randint`` 3 times per
    layer, repeats and massive rows allowed; ``seed`` is not used) or ``sinkscope``
    (``random.Random(seed)``, 3 distinct non-massive rows per layer). (i) zeroes the run's
    coordinates (``run_interventions(coords_rule=...)``; the paper's: top-3 |EPE_0|).

    >>> paper_presets(7, random="sinkscope")["j"].describe()
    'zero 3 random W_K rows per layer (seed 7)'
    >>> paper_presets(7)["j"].describe()
    "zero 3 random W_K rows per layer (the paper's draw: seed 42 before each example, repeats allowed)"
    """
    from .edits import RANDOM_DRAWS

    if random not in RANDOM_DRAWS:
        raise SinkscopeError(f"--random {random} is unknown; use {' or '.join(reversed(RANDOM_DRAWS))}")
    j_seed = PAPER_RANDOM_SEED if random == "paper" else seed
    return edits({k: v.format(seed=j_seed, draw=random) for k, v in PAPER_SPECS.items()})
