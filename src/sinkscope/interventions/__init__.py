"""Interventions: composable model edits, and the paper's ten presets (a)..(j)."""

from __future__ import annotations

from .._lazy import lazy_package

_EXPORTS = {
    **dict.fromkeys(
        ("Compose", "Context", "Identity", "Intervention", "NotApplicable", "apply"), "base"
    ),
    **dict.fromkeys(
        (
            "DropPositionEmbeddings",
            "PatchIndex0",
            "RandomKeyCoords",
            "ReplacePositionEmbedding",
            "ScaleQueryBias",
            "ScaleSharedQuery",
            "SkipMLP",
            "SwapDirection",
            "ZeroKeyCoords",
            "ZeroTokenEmbedding",
        ),
        "edits",
    ),
    **dict.fromkeys(("PAPER_LABELS", "PAPER_TABLE1"), "labels"),
    **dict.fromkeys(("PRESETS", "Preset", "get_preset", "paper_presets"), "presets"),
}
__getattr__, __dir__, __all__ = lazy_package(__name__, globals(), _EXPORTS)
