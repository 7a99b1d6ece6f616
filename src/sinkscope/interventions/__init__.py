"""Interventions: composable model edits, and the paper's ten presets (a)..(j)."""
from .base import Compose, Context, Identity, Intervention, NotApplicable, apply
from .edits import (
    DropPositionEmbeddings,
    PatchIndex0,
    RandomKeyCoords,
    ReplacePositionEmbedding,
    ScaleQueryBias,
    ScaleSharedQuery,
    SkipMLP,
    SwapDirection,
    ZeroKeyCoords,
    ZeroTokenEmbedding,
)
from .presets import PAPER_LABELS, PAPER_TABLE1, paper_presets

__all__ = [
    "Compose",
    "Context",
    "DropPositionEmbeddings",
    "Identity",
    "Intervention",
    "NotApplicable",
    "PAPER_LABELS",
    "PAPER_TABLE1",
    "PatchIndex0",
    "RandomKeyCoords",
    "ReplacePositionEmbedding",
    "ScaleQueryBias",
    "ScaleSharedQuery",
    "SkipMLP",
    "SwapDirection",
    "ZeroKeyCoords",
    "ZeroTokenEmbedding",
    "apply",
    "paper_presets",
]
