"""Structural analyses of the sink circuit: score decomposition, EPE, query-bias / key alignment."""

from __future__ import annotations

from .alignment import bq_key_alignment, gamma, gamma_split
from .decomposition import (
    ScoreTerms,
    delta_percentiles,
    recenter,
    score_terms,
    separation,
    source_agnostic_shift,
)
from .epe import (
    effective_positional_embedding,
    epe_validation,
    epe_validation_full_block,
    massive_coords,
)
from .massive import ResidualProfile, residual_profile

__all__ = [
    "ResidualProfile",
    "ScoreTerms",
    "bq_key_alignment",
    "delta_percentiles",
    "effective_positional_embedding",
    "epe_validation",
    "epe_validation_full_block",
    "gamma",
    "gamma_split",
    "massive_coords",
    "recenter",
    "residual_profile",
    "score_terms",
    "separation",
    "source_agnostic_shift",
]
