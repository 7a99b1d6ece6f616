"""What a model spec is, found without torch or transformers: the spec resolves (a packaged
name, an existing path, a well-formed hub id that is cached or reachable) and its shape (layers,
learned positions, width) is read from its ``config.json`` or GGUF header, so that every option
that depends on the model (``--layers``, ``--max-tokens``, ``--coords``) is checked in well under
a second, before anything heavy is imported.

>>> shape = model_shape("default")
>>> shape.n_layers, shape.n_ctx is not None, shape.d_model > 0
(6, True, True)
>>> check_hub_id("EleutherAI/pythia-70m@step1000")
('EleutherAI/pythia-70m', 'step1000')
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import SinkscopeError
from .options import split_revision
from .sources import (
    DEFAULT_MODEL,
    PACKAGED,
    _looks_like_path,
    embedded_model_dir,
    packaged_model_path,
)

# config.json keys of each size, in the order families use them (a multimodal config nests its
# language model under text_config)
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
WIDTH_KEYS = ("hidden_size", "n_embd", "d_model")
# families whose positions are a learned table: an input longer than it cannot run
LEARNED_POSITIONS = {
    "gpt2": "n_positions",
    "gpt_bigcode": "n_positions",
    "gpt_neo": "max_position_embeddings",
    "opt": "max_position_embeddings",
    "sinkgpt": "n_positions",
}
GPT2_SMALL = {
    "model_type": "gpt2",
    "n_layer": 12,
    "n_embd": 768,
    "n_head": 12,
    "vocab_size": 50257,
    "n_positions": 1024,
}


def is_gpt2_small(config: object) -> bool:
    """True for the GPT-2 small architecture (the model the paper measured): a config object or
    a ``config.json`` dict."""
    if isinstance(config, dict):
        return all(config.get(k) == v for k, v in GPT2_SMALL.items())
    return all(getattr(config, k, None) == v for k, v in GPT2_SMALL.items())


HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")
OFFLINE_HINT = (
    "set HF_HUB_OFFLINE=1 to use only the local cache, or pass a local HF directory, a .gguf "
    "file, packaged:NAME or --model default (the embedded model)"
)


# sizes no causal LM comes near: a config or a tensor name beyond them is a lie, refused before
# anything is allocated (the largest public models have ~130 layers and ~30k-wide residuals)
MAX_LAYERS = 4096
MAX_WIDTH = 1 << 17
MAX_POSITIONS = 1 << 24
MAX_VOCAB = 1 << 24
MAX_HEADER = 100_000_000  # bytes of a safetensors JSON header (the format's own limit)
BLOCK = re.compile(r"(?:^|\.)(?:h|layers|layer|blocks|block|blk)\.(\d+)\.")


@dataclass(frozen=True)
class ModelShape:
    """The sizes options are checked against (None: not known before loading)."""

    n_layers: int | None
    n_ctx: int | None  # learned positions: the longest input; None where positions set no limit
    d_model: int | None


def _sizes(cfg: dict) -> ModelShape:
    cfg = cfg.get("text_config", cfg) if isinstance(cfg.get("text_config"), dict) else cfg

    def first(keys) -> int | None:
        for k in keys:
            v = cfg.get(k)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
        return None

    ctx_key = LEARNED_POSITIONS.get(cfg.get("model_type", ""))
    return ModelShape(first(LAYER_KEYS), first((ctx_key,)) if ctx_key else None, first(WIDTH_KEYS))


def _gguf_shape(path: Path) -> ModelShape | None:
    from .headers import gguf_sizes

    sizes = gguf_sizes(path)
    return ModelShape(sizes[0], None, sizes[1]) if sizes is not None else None


def check_hub_id(spec: str) -> tuple[str, str | None]:
    """``ORG/NAME[@REVISION]`` checked for the hub's syntax: ``(repo, revision)``."""
    repo, revision = split_revision(spec)
    if not HUB_ID.match(repo) or ".." in repo or "--" in repo:
        raise SinkscopeError(
            f"--model {spec} is neither an existing path nor a hub id (ORG/NAME[@REVISION], "
            "letters, digits, '.', '_', '-'); check the spelling"
        )
    return repo, revision


def _hub_config(spec: str) -> Path | None:
    """The ``config.json`` of hub id ``spec``: cached, else fetched when the hub answers (None:
    it has none); a hub that cannot be asked, or has no such model, is one line naming
    ``HF_HUB_OFFLINE`` and the local alternatives."""
    repo, revision = check_hub_id(spec)
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo, "config.json", revision=revision)
    except Exception:
        found = None
    if isinstance(found, str):
        return Path(found)
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline and revision is not None:
        raise SinkscopeError(
            f"could not load revision '{revision}' of '{repo}': it is not in the local Hugging "
            "Face cache and HF_HUB_OFFLINE is set; download it once online, or drop @REVISION"
        )
    if offline:
        raise SinkscopeError(
            f"--model {spec} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
            f"download it once online, or pass a local HF directory, a .gguf file, "
            "packaged:NAME or --model default (the embedded model)"
        )
    state, why = hub_status(repo, revision)
    if state == "missing":
        raise SinkscopeError(
            f"--model {spec}: the Hugging Face hub has no such model or revision ({why}); check "
            "the spelling (or log in with `hf auth login` for a private one)"
        )
    if state == "unreachable":
        raise SinkscopeError(
            f"--model {spec} is not cached and the Hugging Face hub is not reachable ({why}); "
            + OFFLINE_HINT
        )
    try:  # the hub answers: its config.json (a few KB, cached for the load that follows)
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo, "config.json", revision=revision))
    except Exception:
        return None  # no config.json (a GGUF-only repo...): the loader says what it found


def hub_status(repo: str, revision: str | None, timeout: float = 3.0) -> tuple[str, str]:
    """One quick question to the hub: ``("ok" | "missing" | "unreachable", why)``."""
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
    except ImportError:
        return "ok", ""
    try:
        HfApi().model_info(repo, revision=revision, timeout=timeout)
        return "ok", ""
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        return "missing", type(e).__name__
    except Exception as e:  # DNS, refused, timeout, proxy, HTTP 5xx: the hub cannot be used now
        text = str(e).strip().splitlines()[0][:100] if str(e).strip() else ""
        return (
            ("ok", "")
            if "gated" in text.lower()
            else ("unreachable", f"{type(e).__name__}: {text}")
        )


def _resolve(spec: object) -> tuple[str, Path | None]:
    """``spec`` resolved without loading: ``(kind, file)``, kind one of memory, config (file is
    its config.json), gguf, other (a partial checkpoint), hub (not cached: file None); a spec
    that cannot resolve is one line."""
    if not isinstance(spec, (str, os.PathLike)):
        return "memory", None
    spec = str(spec)
    if spec == DEFAULT_MODEL:
        return "config", embedded_model_dir() / "config.json"
    if spec.startswith("packaged:"):
        name = spec.split(":", 1)[1]
        if name not in PACKAGED:
            raise SinkscopeError(
                f"unknown packaged model '{name}'; choose one of: {', '.join(PACKAGED)}"
            )
        return "gguf", packaged_model_path(name)
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_dir() and (path / "config.json").exists():
            return "config", path / "config.json"
        if path.suffix == ".safetensors":  # a partial checkpoint: its names and sizes checked
            check_weights(_read_json(path.parent / "config.json"), [path], spec)
        return ("gguf", path) if path.suffix == ".gguf" else ("other", path)
    if _looks_like_path(split_revision(spec)[0]):
        raise SinkscopeError(
            f"model path {spec} does not exist; check the path or pass a hub id such as gpt2"
        )
    found = _hub_config(spec)
    return ("config", found) if found is not None else ("hub", None)


def safetensors_header(path: Path) -> dict:
    """``{tensor name: shape}`` from a safetensors file's JSON header (stdlib: no tensor read)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            n = int.from_bytes(f.read(8), "little")
            if not 2 <= n <= min(MAX_HEADER, size - 8):
                raise ValueError(f"header length {n} in a file of {size} bytes")
            header = json.loads(f.read(n))
        return {
            k: tuple(int(d) for d in v["shape"]) for k, v in header.items() if k != "__metadata__"
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise SinkscopeError(
            f"{path} is not a readable safetensors file ({type(e).__name__}: {str(e)[:80]}); "
            "re-download or re-save it"
        ) from None


def check_weights(config: dict | None, files: list[Path], spec: object) -> None:
    """The sizes a config (and the tensor names) claim, checked against the weights' own headers
    before any module is built: the layers the names hold equal the config's, every size within
    what a real model has, the residual width one of the tensors' dimensions."""
    shapes: dict = {}
    for f in files:
        shapes |= safetensors_header(f)
    blocks = {int(m.group(1)) for k in shapes for m in [BLOCK.search(k)] if m}
    if blocks and max(blocks) >= MAX_LAYERS:
        raise SinkscopeError(
            f"--model {spec}: a tensor name mentions block {max(blocks)} (of {len(blocks)} blocks "
            f"with tensors); no model has {MAX_LAYERS} layers or more: the file is damaged"
        )
    if config is None:
        return
    sizes = _sizes(config)
    cfg = (
        config.get("text_config", config) if isinstance(config.get("text_config"), dict) else config
    )
    for what, v, top in (
        ("layers", sizes.n_layers, MAX_LAYERS),
        ("residual width", sizes.d_model, MAX_WIDTH),
        ("positions", sizes.n_ctx, MAX_POSITIONS),
        ("vocabulary", cfg.get("vocab_size"), MAX_VOCAB),
    ):
        if isinstance(v, int) and not 0 < v < top:
            raise SinkscopeError(
                f"--model {spec}: config.json claims {v:,} {what}; a real model has fewer than "
                f"{top:,}: fix config.json"
            )
    if blocks and sizes.n_layers is not None and sizes.n_layers != max(blocks) + 1:
        raise SinkscopeError(
            f"--model {spec}: config.json says {sizes.n_layers:,} layers but its weights hold "
            f"blocks 0..{max(blocks)}; fix config.json or the weights"
        )
    dims = {d for shape in shapes.values() for d in shape}
    if shapes and sizes.d_model is not None and sizes.d_model not in dims:
        raise SinkscopeError(
            f"--model {spec}: config.json's residual width {sizes.d_model:,} is no dimension of "
            "its weights; fix config.json or the weights"
        )


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a model directory (every shard), or a single file."""
    if directory.is_file():
        return [directory] if directory.suffix == ".safetensors" else []
    return sorted(directory.glob("*.safetensors"))


def refuse_remote_code(directory: Path, spec: object) -> None:
    """Refuse a model directory whose config or tokenizer config asks transformers to import a
    Python file of its own (``auto_map``): sinkscope never runs a model's code, whatever a
    prompt would answer (every load also passes ``trust_remote_code=False``)."""
    for name in ("config.json", "tokenizer_config.json"):
        try:
            cfg = json.loads((directory / name).read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(cfg, dict) and "auto_map" in cfg:
            raise SinkscopeError(
                f"--model {spec}: its {name} names code of its own to run (auto_map: "
                f"{', '.join(map(str, cfg['auto_map']))[:80]}); sinkscope never runs a model's "
                "code: use a model of a family transformers ships (see docs/architectures.md)"
            )


def model_config(spec: object) -> dict | None:
    """The ``config.json`` of ``spec`` as a dict, where it has one on disk (the embedded model,
    an HF directory, a cached hub id); else None. A spec that cannot resolve is one line."""
    kind, file = _resolve(spec)
    if kind != "config":
        return None
    refuse_remote_code(file.parent, spec)
    cfg = _read_json(file)
    if cfg is not None:
        check_weights(cfg, weight_files(file.parent), spec)
    return cfg


def _read_json(path: Path) -> dict | None:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None  # missing, or broken: the loader's to explain, with its file
    return cfg if isinstance(cfg, dict) else None


def model_shape(spec: object) -> ModelShape | None:
    """Resolve ``spec`` (a failure is one line) and read its sizes where a header tells them
    without loading: a model in memory, a partial checkpoint, an uncached hub id the hub will
    serve give None (their sizes are checked when they load)."""
    kind, file = _resolve(spec)
    if kind == "gguf":
        return _gguf_shape(file)
    cfg = model_config(spec) if kind == "config" else None
    return _sizes(cfg) if cfg is not None else None
