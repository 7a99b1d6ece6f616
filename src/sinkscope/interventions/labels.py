"""Every edit's name and label in one place (torch-free: the CLI's choices come from here).

The paper's ten interventions (a)..(j) with their Table 1 numbers, the scalable kinds of the
``--edit`` language (``mitigate``'s sweeps), ``compare``'s matching edits and ``dynamics``'
trajectory edits, each written in the ``--edit`` language (:mod:`sinkscope.interventions.spec`).

>>> PAPER_LABELS["b"], SCALABLE_TEXT["bq"], COMPARE_EDITS["wk0"]
('b_Q := 0 in every layer (b_K, b_V kept)', 'b_Q := s·b_Q', 'zero W_K rows of massive coords')
"""

from __future__ import annotations

# the kinds of the --edit language; SCALABLE: kind:S keeps a share S (mitigate sweeps S 1 -> 0)
KINDS = (
    "baseline",
    "bq",
    "zero_wk",
    "random_wk",
    "pos",
    "no_pos",
    "zero_tok0",
    "skip_mlp",
    "swap_epe",
    "swap_pe",
    "qbar",
    "wk",
    "patch0",
)
SCALABLE = ("bq", "qbar", "wk", "patch0")
SCALABLE_TEXT = {  # s = the share kept
    "bq": "b_Q := s·b_Q",
    "qbar": "q̄ := s·q̄ (effective query bias)",
    "wk": "W_K massive-coord rows × s",
    "patch0": "index 0 residual: remove (1-s) of its special part",
}
RANDOM_DRAWS = ("sinkscope", "paper")  # random_wk's draws: sinkscope's, the paper's code's
assert tuple(SCALABLE_TEXT) == SCALABLE, "one text per scalable kind of the --edit language"

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
PAPER_SPECS = {  # the ten interventions in the --edit language
    "a": "baseline",
    "b": "bq:0",
    "c": "pos:1",
    "d": "swap_epe",
    "e": "swap_pe",
    "f": "zero_tok0",
    "g": "skip_mlp",
    "h": "no_pos",
    "i": "zero_wk",
    "j": "random_wk:3:{seed}:{draw}",
}
# the paper's Table 1 (BOS attention, layers 4..11, 300 texts): mean and % of baseline
PAPER_TABLE1 = {
    "a": (0.563, 100.0),
    "b": (0.251, 44.7),
    "c": (0.017, 3.0),
    "d": (0.035, 6.2),
    "e": (0.557, 99.0),
    "f": (0.561, 99.7),
    "g": (0.283, 50.3),
    "h": (0.099, 17.5),
    "i": (0.367, 65.2),
    "j": (0.563, 100.0),
}

COMPARE_EDITS = {  # compare's matching interventions across models
    "bq0": "b_Q := 0",
    "qbar0": "remove effective query bias q̄",
    "patch0": "index 0 := mean of others after creating block",
    "wk0": "zero W_K rows of massive coords",
    "rand": "control: zero random W_K rows",
}
# dynamics' trajectories: the paper's (b), (c), (i), in the --edit language, and their labels
DYNAMICS_EDITS = {"bq0": "bq:0", "p0_p1": "pos:1", "zero_wk": "zero_wk"}
DYNAMICS_TEXT = {
    "bq0": "b_Q := 0",
    "p0_p1": "p_0 := p_1",
    "zero_wk": "zero W_K rows of the massive coords",
}
