"""A ``transformers`` model already in memory, taken as it is (as nnsight and TransformerLens take
one): :func:`read_in_memory` checks it and returns the :class:`~sinkscope.models.loaders.Loaded`
that :func:`~sinkscope.models.loading.load_model` wraps in a ``SinkModel``."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import SinkscopeError
from .loaders import Loaded, _quiet_transformers
from .placement import resolve_device, resolve_dtype
from .registry import adapter_class, unsupported


def read_in_memory(
    hf: torch.nn.Module,
    tokenizer: object | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    device_map: str | None = None,
) -> Loaded:
    """Check an in-memory model and take it where it is.

    - The model must be a ``transformers`` causal LM of a family sinkscope analyses (anything
      else is the one "unsupported architecture" error, naming its class).
    - Device and dtype are left as they are; ``device`` / ``dtype`` (not ``"auto"``, which means
      the model's own) move or cast the model in place. ``device_map`` is for loading from files.
    - The mode is left as it is; a model in training mode with active dropout is refused (its
      forward passes would be random), so call ``model.eval()`` first.
    - Attention: the capture swaps in sinkscope's own attention function for the duration of each
      forward pass, whatever the model was built with (sdpa, eager), so that is left as it is,
      except for families sinkscope loads in eager attention (GPT-Neo; those without an SDPA
      path), which are switched with ``set_attn_implementation("eager")`` (older transformers:
      ``config._attn_implementation``) and say so in ``source["attn_implementation"]``.
    - Tokenizer: ``tokenizer``, else the one saved with ``name_or_path`` (a local directory, or a
      hub id in the local cache: never the network), else None (pass ``tokenizer=`` to tokenise).
    """
    name = _display_name(hf)
    cls = _check_causal_lm(hf, name)
    dtype = (
        resolve_dtype(dtype) if dtype not in (None, "auto") else None
    )  # a bad name fails before anything moves
    if device_map is not None:
        raise SinkscopeError(
            f"device_map={device_map!r} places weights while they load; the in-memory {name} is placed "
            "already, so drop device_map (accelerate's dispatch_model places a model in memory)"
        )
    if device is not None:
        if getattr(hf, "hf_device_map", None):
            raise SinkscopeError(
                f"the in-memory {name} was placed by accelerate (hf_device_map); drop device={device!r}"
            )
        hf.to(device=resolve_device(device))
    if dtype is not None:
        hf.to(dtype=dtype)
    _check_no_dropout(hf, name)
    source = {
        "kind": "in-memory",
        "class": type(hf).__name__,
        "name_or_path": hf.name_or_path or None,
    }
    if getattr(hf.config, "_commit_hash", None):
        source["commit"] = hf.config._commit_hash  # loaded from the hub: the snapshot it came from
    switched = _attention_for_capture(hf, cls, name)
    if switched:
        source["attn_implementation"] = switched
    tok = tokenizer if tokenizer is not None else _saved_tokenizer(hf.name_or_path)
    partial = any(
        p.is_meta for p in hf.parameters()
    )  # e.g. built under accelerate's init_empty_weights
    return Loaded(hf, tok, name, source, partial=partial)


def _display_name(hf: torch.nn.Module) -> str:
    """``name_or_path``'s last part (``gpt2``, ``org/name`` -> ``name``), else the class name."""
    path = str(getattr(hf, "name_or_path", "") or "").rstrip("/\\")
    return Path(path).name or type(hf).__name__


def _check_causal_lm(hf: torch.nn.Module, name: str):
    """The adapter class for ``hf``, or the one clear error: not a transformers model, not a
    decoder family sinkscope analyses, or the bare trunk without its LM head."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, PreTrainedModel

    kind = f"{type(hf).__module__}.{type(hf).__qualname__}"
    if not isinstance(hf, PreTrainedModel):
        raise unsupported(type(hf).__name__, f"a {kind}, not a transformers PreTrainedModel")
    mt = getattr(hf.config, "model_type", None)
    try:
        cls = adapter_class(hf.config)
    except SinkscopeError:
        raise unsupported(mt, f"the in-memory {type(hf).__name__}") from None
    lm = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(hf.config), None)
    lms = lm if isinstance(lm, tuple) else (lm,) if lm is not None else ()
    if lms and not isinstance(
        hf, lms
    ):  # e.g. the bare GPT2Model: no LM head, another module layout
        raise SinkscopeError(
            f"the in-memory {name} is a {type(hf).__name__}, not the causal LM of '{mt}'; "
            f"pass a {' or '.join(c.__name__ for c in lms)} (its trunk and LM head as from_pretrained builds them)"
        )
    return cls


def _check_no_dropout(hf: torch.nn.Module, name: str) -> None:
    """Refuse a model whose dropout is active (training mode): sinkscope's numbers would change
    from one run to the next. Dropout modules and the attention dropout rate transformers'
    attention modules apply in training mode both count."""
    active = [
        n
        for n, m in hf.named_modules()
        if m.training
        and (
            (isinstance(m, torch.nn.Dropout) and m.p > 0)
            or (
                isinstance(getattr(m, "attention_dropout", None), float) and m.attention_dropout > 0
            )
        )
    ]
    if active:
        raise SinkscopeError(
            f"the in-memory {name} is in training mode with dropout active ({active[0]} and "
            f"{len(active) - 1} more); call model.eval() before load_model (it leaves the mode as it is)"
        )


def _attention_for_capture(hf, cls, name: str) -> str | None:
    """Switch to the attention implementation the family is loaded with where the capture needs
    it (see :func:`read_in_memory`); ``"OLD -> NEW"`` when it switched, else None."""
    want = cls.attn_implementation_for(hf.config)
    have = getattr(hf.config, "_attn_implementation", None)
    if want == "sdpa" or have == want:
        return None  # sdpa (or whatever it runs): the capture replaces it during each pass
    if hasattr(hf, "set_attn_implementation"):
        with _quiet_transformers():
            hf.set_attn_implementation(want)
    else:  # transformers before set_attn_implementation
        hf.config._attn_implementation = want
    if (
        getattr(hf.config, "_attn_implementation", None) != want
    ):  # e.g. GPT-Neo built for flash attention
        raise SinkscopeError(
            f"the in-memory {name} runs {have} attention, which sinkscope cannot capture for "
            f"{cls.family}; build or load it with attn_implementation={want!r}"
        )
    return f"{have} -> {want}"


def _saved_tokenizer(name_or_path: str | None):
    """The tokenizer saved with the model: a local directory, or a hub id in the local cache
    (``local_files_only``: never the network); None where there is none."""
    if not name_or_path:
        return None
    from transformers import AutoTokenizer

    local = Path(name_or_path).expanduser().is_dir()
    with _quiet_transformers():
        try:
            return AutoTokenizer.from_pretrained(
                name_or_path,
                trust_remote_code=False,
                **({} if local else {"local_files_only": True}),
            )
        except (
            OSError,
            ValueError,
            TypeError,
            KeyError,
            ImportError,
        ):  # none saved, or not loadable offline
            return None
