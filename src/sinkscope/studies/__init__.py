"""Studies: compositions of stages (``reproduce``: every registered stage on one model, cached,
with a report; ``sweep``: the paper's interventions over models x lengths x content x seeds;
``zoo`` and ``dynamics``: trained variants and training checkpoints)."""

from __future__ import annotations
