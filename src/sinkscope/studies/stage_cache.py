"""The cache of ``reproduce``'s steps: keys and records.

A step is reused when its ``stage.json`` carries the same *key*: a hash of the model's weights
and config, the token ids of the inputs (forward steps), the shared settings the step reads,
its stage Config as it runs, the keys of the steps it builds on, the figure format and the
sinkscope version.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from ..data import TokenizedInputs
    from ..models import SinkModel
    from ..registry import Stage
    from .reproduce_plan import Settings


def weights_hash(model: SinkModel) -> str:
    """SHA-256 of the config and every loaded tensor (name, dtype, shape, bytes); a partial
    checkpoint's missing tensors (on ``meta``) are left out."""
    h = hashlib.sha256(model.hf.config.to_json_string(use_diff=False).encode())
    for name, t in sorted(model.hf.state_dict().items()):
        if t.is_meta:
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def inputs_hash(inputs: TokenizedInputs | None) -> str | None:
    if inputs is None:
        return None
    h = hashlib.sha256(inputs.ids.numpy().astype(np.int64).tobytes())
    h.update(inputs.lengths.numpy().astype(np.int64).tobytes())
    h.update("\x1f".join(inputs.domains).encode())
    return h.hexdigest()


CACHE_FORMAT = 6  # 6: stages from the registry, keyed by their Config; 5: summaries record how the model was loaded (dtype, source); 4: the facts stage; 3: the paper's (i) coordinates, (j) draw, Δ std and EPE medians; 2: q_bar as safetensors


def _reads_inputs(stage, model) -> bool:
    r = stage.reads_inputs
    return bool(r(model)) if callable(r) and model is not None else (r is True)


def stage_key(
    stage: Stage,
    w_hash: str,
    in_hash: str | None,
    settings: Settings,
    upstream: dict[str, str],
    model: SinkModel | None = None,
) -> str:
    """A step's cache key: everything its result depends on (see the module docstring)."""
    from .. import __version__
    from ..report.formats import current_format

    blob = {
        "stage": stage.name,
        "version": __version__,
        "cache_format": CACHE_FORMAT,
        "weights": w_hash,
        "inputs": in_hash if stage.forward or _reads_inputs(stage, model) else None,
        "settings": {k: getattr(settings, k) for k in stage.reads},
        "config": stage.config_key(settings),  # the step's stage Config, as it runs
        "plugin": _plugin_version(getattr(stage, "config_cls", None)),  # a plugin's own version
        "after": {k: upstream.get(k) for k in stage.after + stage.uses},
        "figure_format": None
        if stage.name == "facts"
        else current_format(),  # a cached stage's figures are in the run's format
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=list).encode()).hexdigest()[:20]


def _plugin_version(cls) -> dict | None:
    """``{distribution: version}`` of a plugin stage (None for sinkscope's own): an upgraded
    plugin recomputes its cached steps."""
    src = getattr(cls, "source", "sinkscope")
    if cls is None or src == "sinkscope":
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return {src: version(src)}
    except PackageNotFoundError:
        return {src: None}


def _read_record(d: Path) -> dict | None:
    try:
        with open(d / "stage.json") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return None if np.isnan(x) else float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def versions() -> dict:
    import matplotlib
    import pandas
    import transformers

    from .. import __version__

    return {
        "sinkscope": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "pandas": pandas.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }
