"""How a model is loaded, checked without torch (the CLI checks these before anything heavy
loads): ``--dtype``, ``--device-map`` and the ``ORG/NAME@REVISION`` form of a hub id."""

from __future__ import annotations

from ..errors import SinkscopeError

# every transformers load sinkscope makes says this: a model's own Python code never runs, and no
# prompt ("trust remote code? [y/N]") is ever reached to decide it
NO_REMOTE_CODE = {"trust_remote_code": False}
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE_MAPS = ("auto",)
DTYPE_HELP = (
    "float32, bfloat16, float16 or auto (default: the checkpoint's own dtype for hub ids and HF directories; "
    "float32 for the embedded model, .gguf files, partial checkpoints, --preset paper and reproduce)"
)


def check_dtype(name: str) -> str:
    """``--dtype``: one of :data:`DTYPES`.

    >>> check_dtype("bf16")
    Traceback (most recent call last):
    sinkscope.errors.SinkscopeError: --dtype bf16 is not a dtype sinkscope loads; use float32, bfloat16, float16 or auto
    """
    if name not in DTYPES:
        raise SinkscopeError(
            f"--dtype {name} is not a dtype sinkscope loads; use float32, bfloat16, float16 or auto"
        )
    return name


def run_dtype(dtype: str, paper: bool) -> str:
    """The dtype a command asks the loader for: ``--dtype`` as given, except that the study's runs
    (``paper``: ``intervene`` / ``sweep`` with ``--preset paper``, ``reproduce``) load float32
    when it is ``auto``.

    >>> run_dtype("auto", paper=True), run_dtype("auto", paper=False), run_dtype("bfloat16", paper=True)
    ('float32', 'auto', 'bfloat16')
    """
    return "float32" if paper and check_dtype(dtype) == "auto" else dtype


def check_device_map(device_map: str | None, device: str) -> str | None:
    """``--device-map``: ``auto`` (accelerate spreads the layers over the GPUs, then CPU memory),
    which places the weights itself, so it takes no ``--device`` other than the default cpu.

    >>> check_device_map("auto", "cuda")
    Traceback (most recent call last):
    sinkscope.errors.SinkscopeError: --device-map auto places the weights itself; drop --device cuda (or drop --device-map to load on cuda)
    """
    if device_map is None:
        return None
    if device_map not in DEVICE_MAPS:
        raise SinkscopeError(
            f"--device-map {device_map} is not supported; use --device-map auto (several GPUs or CPU offload) or leave it out"
        )
    if str(device) != "cpu":
        raise SinkscopeError(
            f"--device-map {device_map} places the weights itself; drop --device {device} "
            f"(or drop --device-map to load on {device})"
        )
    return device_map


def split_revision(spec: str) -> tuple[str, str | None]:
    """``ORG/NAME@REVISION`` -> ``(ORG/NAME, REVISION)``; no ``@``: ``(spec, None)``.

    >>> split_revision("EleutherAI/pythia-70m@step1000"), split_revision("gpt2")
    (('EleutherAI/pythia-70m', 'step1000'), ('gpt2', None))
    """
    if "@" not in spec:
        return spec, None
    repo, revision = spec.split("@", 1)
    if not repo or not revision:
        raise SinkscopeError(
            f"--model {spec} names no {'hub id' if not repo else 'revision'}; "
            "write ORG/NAME@REVISION, e.g. EleutherAI/pythia-70m@step1000"
        )
    return repo, revision
