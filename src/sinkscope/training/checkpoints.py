"""The files of a ``sinkscope train`` run directory: ``checkpoint.pt`` (written atomically, read
with ``weights_only=True``), the HF model directory a finished run exports, and the kept steps in
``checkpoints/step-NNNNNN/`` (``--save-at``). Each name is listed in the run's ``.sinkscope``
marker before it is written (:func:`sinkscope.io.record_files`), and ``--force`` removes those
names only (:func:`clear_run`): a user's notes in the run directory stay."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import SinkscopeError
from ..io import marker_files, publish_mode, record_files, write_json_atomic
from ..models.sinkgpt import SinkGPTForCausalLM
from .config import CHECKPOINTS, checkpoint_name

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def save_checkpoint(
    path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int, history: dict
) -> None:
    """Write ``checkpoint.pt`` (model, optimiser, step, history) through a temporary file, so a
    stopped run never leaves a torn checkpoint."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    record_files(path.parent, [path.name])
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "history": history,
        },
        tmp,
    )
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """``checkpoint.pt`` read with ``weights_only=True``: tensors, numbers, strings and
    containers only, so a crafted file cannot run code (PyTorch's restricted unpickler)."""
    import pickle

    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # refused globals, truncation, random bytes: all "cannot be read"
        why = (
            "it holds Python objects beyond tensors and numbers"
            if isinstance(e, pickle.UnpicklingError) and "global" in str(e).lower()
            else f"it is not a readable checkpoint: {type(e).__name__}"
        )
        raise SinkscopeError(
            f"{path} is not a sinkscope checkpoint that can be read safely ({why}); "
            "start over with --force (nothing in it was run)"
        ) from None
    ok = (
        isinstance(state, dict)
        and isinstance(state.get("model"), dict)
        and isinstance(state.get("optimizer"), dict)
        and isinstance(state.get("step"), int)
        and isinstance(state.get("history"), dict)
        and isinstance(state["history"].get("config"), dict)
    )
    if not ok:
        raise SinkscopeError(
            f"{path} is not a sinkscope checkpoint (no model / optimizer / step / history with its config); start over with --force"
        )
    return state


def looks_like_run(path: Path) -> bool:
    """An unmarked run directory of a sinkscope before markers: a tokenizer it fitted plus a
    checkpoint or a finished run's ``training.json``."""
    return (path / "tokenizer" / "tokenizer.json").exists() and (
        (path / "checkpoint.pt").exists() or (path / "training.json").exists()
    )


def earlier_run(path: Path) -> bool:
    """An unmarked run of a sinkscope before markers that ``--resume`` may continue (and mark): a
    tokenizer it fitted and a ``checkpoint.pt`` that reads as a sinkscope checkpoint. Never
    ``--force``: only a marked run is cleared."""
    if not looks_like_run(path) or not (path / "checkpoint.pt").is_file():
        return False
    try:
        load_checkpoint(path / "checkpoint.pt")
    except SinkscopeError:
        return False
    return True


# what a run writes at the top of its directory, for a run whose marker lists no names (marked
# by a sinkscope before the list): the checkpoint, the export (model, config, tokenizer files,
# training.json), the fitted tokenizer and the kept steps
RUN_FILES = (
    *("checkpoint.pt", "training.json", "config.json", "generation_config.json"),
    *("model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"),
    *("vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja"),
    *("tokenizer", CHECKPOINTS),
)
# the files a tokenizer directory is read from (AutoTokenizer), kept when --tokenizer is the run
TOKENIZER_FILES = (
    *("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json"),
    *("merges.txt", "added_tokens.json", "tokenizer.model", "spiece.model", "vocab.txt"),
)


def clear_run(out: Path, reads: list[Path] = ()) -> list[str]:
    """Remove what an earlier run wrote in ``out`` (``--force`` without ``--resume``): the names
    its marker lists (else :data:`RUN_FILES`), in ``checkpoints/`` only the kept steps; never
    anything else, nor a path this run reads (``reads``: its data file, its ``--tokenizer``
    directory's files) or a folder holding one. Returns the names removed."""
    keep = [Path(os.path.realpath(r)) for r in reads]
    held = lambda p: any(k == p or p in k.parents for k in keep)  # noqa: E731
    removed = []
    for name in marker_files(out) or RUN_FILES:
        p = out / name
        if not (p.exists() or p.is_symlink()) or held(Path(os.path.realpath(p))):
            continue
        if name == CHECKPOINTS and p.is_dir() and not p.is_symlink():
            for step in p.iterdir():  # the kept steps (and their temp folders) only
                if step.is_dir() and step.name.lstrip(".").startswith("step-"):
                    shutil.rmtree(step)
            if any(p.iterdir()):
                continue
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        removed.append(name)
    return removed


def run_reads(data: str, tokenizer: object, out: Path) -> list[Path]:
    """The paths the run reads, which clearing ``out`` must leave: the ``--data`` file, the
    ``--tokenizer`` directory (only its tokenizer files when it is ``out`` itself)."""
    kind, _, rest = data.partition(":")
    path = rest.rpartition(":")[0] if kind == "jsonl" else rest if kind == "text" else ""
    reads = [Path(path).expanduser()] if path else []
    src = Path(str(getattr(tokenizer, "name_or_path", "") or "")).expanduser()
    if str(src) not in ("", ".") and src.is_dir():
        same = os.path.realpath(src) == os.path.realpath(out)
        reads += [src / n for n in TOKENIZER_FILES] if same else [src]
    return reads


def is_kept(out: Path, step: int) -> bool:
    """Whether the run in ``out`` holds the weights of ``step`` (a complete kept directory:
    :func:`export` writes its ``config.json`` last)."""
    return (out / CHECKPOINTS / checkpoint_name(step) / "config.json").exists()


def export(
    model: SinkGPTForCausalLM, tokenizer: PreTrainedTokenizerBase, out: Path, summary: dict
) -> None:
    """Write the HF directory: a plain ``GPT2LMHeadModel`` when every switch is GPT-2's.
    ``config.json`` is written last, so a directory with one always has complete weights."""
    import tempfile

    from transformers import GPT2LMHeadModel

    cfg = model.config
    if cfg.is_gpt2:
        hf = GPT2LMHeadModel(cfg.to_gpt2_config())
        missing, unexpected = hf.load_state_dict(model.state_dict(), strict=False)
        assert not unexpected and all(
            k.endswith("attn.bias") or k.endswith("masked_bias") for k in missing
        ), (missing, unexpected)
    else:
        hf = model
    hf.config.sinkscope_bos = bool(summary["config"]["bos"])
    hf.config.sinkscope_step = int(summary["step"])  # the training step of these weights
    from ..models.loading import _quiet_transformers

    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp, _quiet_transformers():
        hf.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(Path(tmp) / "training.json", summary)
        names = sorted(os.listdir(tmp), key=lambda n: n == "config.json")  # config.json last
        record_files(out, names)  # listed before they are written: --force removes these only
        for n in names:
            publish_mode(Path(tmp) / n)
            os.replace(Path(tmp) / n, out / n)


def keep_checkpoint(
    model: SinkGPTForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    out: Path,
    step: int,
    summary: dict,
) -> Path:
    """Write the weights of ``step`` as a HF directory ``out/checkpoints/step-NNNNNN`` (the
    :func:`export` layout, ``summary`` as its ``training.json``), atomically: a directory of that
    name is always complete. One kept earlier under the name is replaced."""
    import tempfile

    parent = out / CHECKPOINTS
    record_files(out, [CHECKPOINTS])
    parent.mkdir(exist_ok=True)
    final = parent / checkpoint_name(step)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{final.name}.tmp-"))
    old = None
    try:
        export(model, tokenizer, tmp, summary)
        publish_mode(tmp, directory=True)
        if final.exists():  # a resumed run reaching the step again: swap, then drop the old one
            old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{final.name}.old-"))
            os.replace(final, old)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return final
