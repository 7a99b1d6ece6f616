"""The cache of ``reproduce``'s steps: keys and records.

A step is reused when its ``stage.json`` carries the same *key*: a hash of the model's weights
and config (as loaded, in memory), of its tokenizer (vocabulary, merges, special tokens: every
step, weight-only ones included), the token ids of the inputs (forward steps), the shared
settings the step reads, its stage Config as it runs, the keys of the steps it builds on, the
figure format and the sinkscope version. A ``stage.json`` that cannot be read back (not JSON,
not a mapping, a summary of another shape) is computed again, with one warning line naming it.
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


def tokenizer_hash(model: SinkModel | None) -> str | None:
    """SHA-256 of the model's tokenizer: its class, vocabulary and merges (a fast tokenizer's
    serialised form, without the padding and truncation a call sets), special tokens and whether
    it adds BOS / EOS; None without a tokenizer."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return None
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        for setting in ("padding", "truncation"):  # set by a call, not by the tokenizer
            state.pop(setting, None)
    else:
        state = sorted(tok.get_vocab().items())
    extra = {
        "class": type(tok).__name__,
        "special": getattr(tok, "special_tokens_map", {}),
        **{k: getattr(tok, k, None) for k in ("add_bos_token", "add_eos_token", "bos_token_id")},
    }
    blob = json.dumps([state, extra], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def inputs_hash(inputs: TokenizedInputs | None) -> str | None:
    if inputs is None:
        return None
    h = hashlib.sha256(inputs.ids.numpy().astype(np.int64).tobytes())
    h.update(inputs.lengths.numpy().astype(np.int64).tobytes())
    h.update("\x1f".join(inputs.domains).encode())
    return h.hexdigest()


CACHE_FORMAT = 7  # 7: the tokenizer in every key; 6: stages from the registry, keyed by their Config; 5: summaries record how the model was loaded (dtype, source); 4: the facts stage; 3: the paper's (i) coordinates, (j) draw, Δ std and EPE medians; 2: q_bar as safetensors


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
    tokenizer: str | None = None,
) -> str:
    """A step's cache key: everything its result depends on (see the module docstring)."""
    from .. import __version__
    from ..report.formats import current_format

    blob = {
        "stage": stage.name,
        "version": __version__,
        "cache_format": CACHE_FORMAT,
        "weights": w_hash,
        "tokenizer": tokenizer,  # tokenizer_hash(model): token ids, BOS and embeddings read follow it
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
    """``d/stage.json`` as a mapping; None when it is missing, not JSON or not a mapping."""
    try:
        with open(d / "stage.json", encoding="utf-8") as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def cached_record(step: object, d: Path, key: str) -> dict | None:
    """The finished record of ``step`` in ``d`` when it was made for ``key``; None when there is
    none or it is stale. One that cannot be read back (not JSON, not a mapping, a summary its
    record type refuses) is None too, after one warning line naming ``d/stage.json``."""
    from ..report.records import RecordError, read_record
    from .sweep_cells import warn_damaged

    path = d / "stage.json"
    if not path.exists():
        return None
    try:
        rec, why = json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, ValueError) as e:
        rec, why = None, f"{type(e).__name__}: {str(e)[:80]}"
    if why is None and not isinstance(rec, dict):
        why = f"a JSON {type(rec).__name__}, not a mapping"
    if why is None and (rec.get("key") != key or rec.get("status") != "done"):
        return None  # another key (stale) or unfinished: computed again, nothing to warn about
    if why is None:
        why = _record_problem(rec)
    if why is None:
        try:
            read_record(getattr(step, "record", None), rec["summary"], getattr(step, "name", None))
        except RecordError as e:
            why = str(e)
    if why is not None:
        warn_damaged(path, why)
        return None
    return rec


def _record_problem(rec: dict) -> str | None:
    if not isinstance(rec.get("summary"), dict):
        return "no summary mapping"
    sec = rec.get("seconds", 0.0)
    if isinstance(sec, bool) or not isinstance(sec, (int, float)):
        return "'seconds' is not a number"
    bad = [k for k in ("figures", "tables") if not isinstance(rec.get(k, {}), dict)]
    return f"'{bad[0]}' is not a mapping" if bad else None


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
