"""Where and in what dtype a model runs: ``--device`` and ``--dtype`` checked and resolved once,
before anything is loaded, and the ``device_map`` ``from_pretrained`` is given."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import SinkscopeError
from .options import check_dtype

if TYPE_CHECKING:
    from transformers import PretrainedConfig


def resolve_device(device: str | torch.device) -> torch.device:
    """``--device`` checked before anything is loaded: a torch device that exists here.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise SinkscopeError(
            f"--device {device!r} is not a torch device; use cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise SinkscopeError(
                f"--device {device}: torch sees no CUDA device on this machine (torch {torch.__version__}); use --device cpu"
            )
        if dev.index is not None and dev.index >= n:
            raise SinkscopeError(
                f"--device {device}: this machine has {n} CUDA device(s), cuda:0..cuda:{n - 1}"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise SinkscopeError(f"--device {device}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise SinkscopeError(f"--device {device}: sinkscope runs on cpu, cuda or mps")
    return dev


DTYPES_BY_NAME = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the name summaries record).

    >>> dtype_name(torch.bfloat16)
    'bfloat16'
    """
    return str(dtype).removeprefix("torch.")


def resolve_dtype(dtype: str | torch.dtype, config: PretrainedConfig | None = None) -> torch.dtype:
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
            raise SinkscopeError(
                f"dtype {dtype} is not one sinkscope loads; use torch.float32, torch.bfloat16 or torch.float16"
            )
        return dtype
    if check_dtype(dtype) != "auto":
        return DTYPES_BY_NAME[dtype]
    own = (
        (getattr(config, "dtype", None) or getattr(config, "torch_dtype", None))
        if config is not None
        else None
    )
    own = DTYPES_BY_NAME.get(own) if isinstance(own, str) else own
    return own if own in DTYPES_BY_NAME.values() else torch.float32


def _placement(device: torch.device, device_map: str | None):
    """``from_pretrained``'s ``device_map``: ``--device-map``, else the device itself (the
    weights go there directly, without a stop in CPU memory), None for the CPU."""
    return device_map if device_map is not None else (None if device.type == "cpu" else str(device))
