"""The loaders behind :func:`~sinkscope.models.loading.load_model`, one per kind of file: a HF
directory or hub id, a ``.gguf`` file (dequantised), a partial safetensors checkpoint (built on
``meta``). Each returns a :class:`Loaded`; ``load_model`` checks it and wraps it in a ``SinkModel``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import NamedTuple

import torch

from ..errors import SinkscopeError
from .options import NO_REMOTE_CODE
from .placement import _placement, resolve_dtype
from .registry import adapter_class, adapter_for, supported_families
from .sources import _hub_commit

# a directory holds a tokenizer when it has one of these (what transformers reads its vocabulary from)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")


class Loaded(NamedTuple):
    """What a loader read, before ``load_model``'s checks: the HF model, its tokenizer (None for a
    partial checkpoint), a display name and the record of its source."""

    hf: torch.nn.Module
    tokenizer: object | None
    name: str
    source: dict
    partial: bool = False


def _layer_index(name: str) -> int | None:
    """The block a HF parameter / buffer name belongs to: its first ``.N.`` (``h.3``, ``layers.3``)."""
    import re

    m = re.search(r"\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def check_finite(model: torch.nn.Module) -> None:
    """Refuse NaN / inf weights up front, naming the first parameter (in layer order) that has
    them: a forward pass would only spread them into a table of NaN."""
    for name, p in model.named_parameters():
        if p.is_meta or torch.isfinite(p).all():
            continue
        n_nan, n_inf = int(torch.isnan(p).sum()), int(torch.isinf(p).sum())
        layer = _layer_index(name)
        where = f"layer {layer}" if layer is not None else "outside the layers"
        raise SinkscopeError(
            f"the checkpoint's weights are not finite: {name} ({where}) holds {n_nan} NaN and {n_inf} inf values; "
            "it is corrupt or from a diverged run, so load another checkpoint"
        )


@contextlib.contextmanager
def _quiet_transformers():
    """Hide transformers' own loading bars and warnings (sinkscope reports progress itself)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_hf(
    spec: str,
    device,
    dtype,
    device_map,
    name: str,
    revision: str | None = None,
    own_dtype: bool = True,
) -> Loaded:
    """A HF directory or hub id (``revision``: a branch, tag or commit of the hub repo)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from .precheck import model_config

    hub = not Path(spec).exists()
    if not hub:
        model_config(
            spec
        )  # no auto_map, sizes agree with the weights' headers: before transformers
    source = {"kind": "hf", "spec": spec} | ({"revision": revision} if hub else {})
    try:
        if hub:
            source["commit"] = _hub_commit(spec, revision)
        at = {"revision": source.get("commit") or revision} if hub else {}
        config = AutoConfig.from_pretrained(spec, **at, **NO_REMOTE_CODE)
    except (OSError, ValueError) as e:
        why = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        if revision is not None:
            raise SinkscopeError(
                f"could not load revision '{revision}' of '{spec}' ({why}); check that the branch, tag or commit "
                "exists on the hub (offline: that it is in the local hub cache), or drop @REVISION"
            ) from None
        raise SinkscopeError(
            f"could not load model '{spec}' ({why}); check the name, your network (the hub is needed for ids) "
            "or pass a local path"
        ) from None
    cls = adapter_class(config)
    dtype = resolve_dtype(dtype, config if own_dtype else None)
    with _quiet_transformers():
        hf, info = AutoModelForCausalLM.from_pretrained(
            spec,
            dtype=dtype,
            attn_implementation=cls.attn_implementation_for(config),
            device_map=_placement(device, device_map),
            output_loading_info=True,
            **at,
            **NO_REMOTE_CODE,
        )
        _check_loading_info(name, info, adapter_for(hf).n_layers)
        try:
            tok = AutoTokenizer.from_pretrained(spec, **at, **NO_REMOTE_CODE)
        except (OSError, ValueError, TypeError):
            tok = None
        if not hub and not any((Path(spec) / f).exists() for f in TOKENIZER_FILES):
            tok = None  # transformers would build an empty one-token tokenizer from the config
    return Loaded(hf, tok, name, source)


def _check_loading_info(name: str, info: dict, n_layers: int) -> None:
    """Refuse weights that do not fit the config: tensors the config has and the file lacks
    (transformers would initialise them at random) or that the file has for layers the config
    lacks, other weights it would drop, and shape mismatches, all silent under its quiet logging.
    Leftover buffers (GPT-2's ``attn.masked_bias``) are harmless and pass."""
    from ..errors import compress_names

    def beyond(k: str) -> bool:
        layer = _layer_index(k)
        return k.endswith(".weight") or (layer is not None and layer >= n_layers)

    problems = []
    for key, what, keep in (
        ("missing_keys", "missing", None),
        ("unexpected_keys", "not in the model", beyond),
        ("mismatched_keys", "of another shape", None),
    ):
        names = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(key) or ())
        names = [n for n in names if keep is None or keep(n)]
        if names:
            problems.append(f"{len(names)} {what} ({compress_names(names)[:160]})")
    if problems:
        raise SinkscopeError(
            f"{name}: the weights do not match config.json: {'; '.join(problems)}; fix config.json or load the checkpoint it belongs to"
        )


def _load_gguf(path: Path, device, dtype, device_map) -> Loaded:
    """A .gguf file. transformers dequantises it: each tensor is unpacked to float32 and cast to
    the run's dtype (``auto``: float32) as it is read, so the model is dense in that dtype (the
    4-bit saving is not kept; the float32 copy is one tensor at a time, never the whole model)."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise SinkscopeError(
            "loading .gguf files needs the gguf package: pip install 'sinkscope[models]'"
        ) from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:  # dense weights always: the adapters read W_Q, W_K... (transformers >= 5 could keep GGUF blocks packed)
        from transformers import GgufConfig

        dense = {"quantization_config": GgufConfig(dequantize=True)}
    except ImportError:  # older transformers: always dense
        dense = {}
    dtype = resolve_dtype(dtype)
    with _quiet_transformers():
        try:
            hf = AutoModelForCausalLM.from_pretrained(
                str(path.parent),
                gguf_file=path.name,
                dtype=dtype,
                attn_implementation="sdpa",
                device_map=_placement(device, device_map),
                **dense,
                **NO_REMOTE_CODE,
            )
        except (ValueError, KeyError, RuntimeError) as e:
            msg = str(e).splitlines()[0][:200] if str(e).strip() else type(e).__name__
            if "architecture" in msg and "not supported" in msg:
                raise SinkscopeError(
                    f"{path}: {msg}; supported families (model_type): {supported_families()}"
                ) from None
            raise SinkscopeError(f"could not load GGUF {path}: {msg}") from None
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, **NO_REMOTE_CODE)
    return Loaded(hf, tok, path.stem, {"kind": "gguf", "path": str(path)})


def _safetensors_files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(path.glob("*.safetensors"))


def _dir_is_partial(path: Path) -> bool:
    for f in _safetensors_files(path):
        from safetensors import safe_open

        with safe_open(str(f), "pt") as st:
            if "missing" in (st.metadata() or {}):
                return True
    return False


def _gpt2_config_from_tensors(shapes: dict[str, tuple], meta: dict):
    from transformers import GPT2Config

    if "transformer.wpe.weight" not in shapes:
        raise SinkscopeError(
            "partial checkpoint without config.json: only GPT-2 names (transformer.*) can be inferred; "
            "add a config.json next to the .safetensors file"
        )
    n_ctx, d = shapes["transformer.wpe.weight"]
    n_layer = 1 + max(int(k.split(".")[2]) for k in shapes if k.startswith("transformer.h."))
    n_head = int(meta.get("n_head", d // 64))  # every OpenAI GPT-2 size uses d_head = 64
    return GPT2Config(
        n_embd=d,
        n_layer=n_layer,
        n_head=n_head,
        n_positions=n_ctx,
        vocab_size=int(meta.get("vocab_size", 50257)),
    )


def _load_partial(path: Path, device, dtype, device_map) -> Loaded:
    """Build the architecture on ``meta`` and assign the tensors the checkpoint has (in ``dtype``;
    ``auto``: float32)."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    from .precheck import _read_json, check_weights, refuse_remote_code

    cfg_json = (path if path.is_dir() else path.parent) / "config.json"
    check_weights(_read_json(cfg_json), list(_safetensors_files(path)), path)  # before any read
    if device_map is not None:
        raise SinkscopeError(
            f"{path} is a partial checkpoint, which --device-map cannot place; drop --device-map "
            "(a partial checkpoint holds a few tensors) or load a complete one"
        )
    dtype = resolve_dtype(dtype)
    tensors: dict[str, torch.Tensor] = {}
    meta: dict = {}
    for f in _safetensors_files(path):
        with safe_open(str(f), "pt", device="cpu") as st:
            meta.update(st.metadata() or {})
            for k in st.keys():
                tensors[k] = st.get_tensor(k)
    if not tensors:
        raise SinkscopeError(f"{path} holds no tensors")
    cfg_dir = path if path.is_dir() else path.parent
    if (cfg_dir / "config.json").exists():
        refuse_remote_code(cfg_dir, path)
        config = AutoConfig.from_pretrained(str(cfg_dir), **NO_REMOTE_CODE)
    else:
        config = _gpt2_config_from_tensors({k: tuple(v.shape) for k, v in tensors.items()}, meta)
    config._attn_implementation = adapter_class(config).attn_implementation_for(config)
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(config, dtype=dtype)
    expected = dict(hf.state_dict())
    unknown = [k for k in tensors if k not in expected]
    if unknown:
        raise SinkscopeError(
            f"{path}: tensors not in a {config.model_type} model: {', '.join(unknown[:5])}; is the config right?"
        )
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise SinkscopeError(
                f"{path}: {k} has shape {tuple(v.shape)}, the config expects {tuple(expected[k].shape)}"
            )
    hf.load_state_dict(
        {k: v.to(device=device, dtype=dtype) for k, v in tensors.items()}, strict=False, assign=True
    )
    name = meta.get("model") or path.name
    return Loaded(
        hf, None, f"{name} (partial)", {"kind": "partial", "path": str(path), **meta}, partial=True
    )
