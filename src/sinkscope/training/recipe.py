"""``sinkscope train``: a small GPT-2-style LM with each sink-circuit component switchable.

The run directory holds ``checkpoint.pt`` (model, optimiser, step, history; replaced atomically
every ``ckpt_every`` steps) and the tokenizer from the start; at the end a HF model directory
(``config.json``, ``model.safetensors``, tokenizer, ``training.json``) that every sinkscope
command loads. ``save_at`` steps (``--save-at``) are kept as such directories too, in
``checkpoints/step-NNNNNN/`` (step 0: the initial weights), each recording its step
(``training.json`` ``step``, ``config.json`` ``sinkscope_step``). Batches and initialisation depend only on the seed, so a run resumed from a
checkpoint follows the uninterrupted run's loss curve exactly (on the same machine).

>>> import tempfile
>>> cfg = TrainConfig(n_layer=1, n_embd=16, n_head=2, context=40, batch=2, steps=2, vocab=300, eval_every=0)
>>> r = train(cfg, tempfile.mkdtemp() + "/m", data=tiny_texts(), progress=False)
>>> len(r["losses"]), r["config"]["steps"]
(2, 2)
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..errors import SinkscopeError
from ..io import MARKER, check_owned, claim_dir, exclusive_dir, publish_mode, write_json_atomic
from ..models.loading import resolve_device
from ..models.sinkgpt import SinkGPTForCausalLM
from .config import CHECKPOINTS, PROBE_T, TrainConfig, checkpoint_name, save_at_steps
from .data import (
    RESERVED,
    SPECIAL,
    SYNTHETIC,
    sample_windows,
    token_streams,
    tokenizer_in,
    training_texts,
)


def tiny_texts() -> dict[str, list[str]]:
    """A few kB of synthetic text for doctests and unit tests."""
    import random

    r = random.Random(0)
    words = (
        "the cat sat on a mat while dogs ran past quickly and birds sang softly in trees".split()
    )
    return {
        d: [" ".join(r.choice(words) for _ in range(80)) for _ in range(30)] for d in ("nl", "code")
    }


def _lr(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (
        cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    )


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )


def probe_sink(model, probe: torch.Tensor) -> float:
    """Mean attention to index 0 from the second half of ``probe`` windows, over the scaled paper
    layer band (the number ``sinkscope measure`` reports)."""
    from ..metrics import KeyAttentionCapture
    from ..metrics.sink import key_attention, resolve_band
    from ..models import adapter_for

    ad = adapter_for(model)
    lo, hi = resolve_band(None, ad.n_layers)
    was = model.training
    model.eval()
    with torch.no_grad(), KeyAttentionCapture(ad, keys=(0,)) as cap:
        model.transformer(input_ids=probe)
        a = key_attention(cap.stacked().float(), 0)  # [batch, layer, head]
    model.train(was)
    return float(a[:, lo:hi].mean())


def lm_loss(logits: torch.Tensor, ids: torch.Tensor, bos: bool) -> torch.Tensor:
    """Mean next-token cross-entropy of ``ids [batch, pos]``; with ``bos`` the prediction made
    from ``<|endoftext|>`` alone (the first text token) is not scored."""
    start = 1 if bos else 0
    return torch.nn.functional.cross_entropy(
        logits[:, start:-1].reshape(-1, logits.shape[-1]), ids[:, start + 1 :].reshape(-1)
    )


@torch.no_grad()
def _val_loss(model, windows: torch.Tensor, bos: bool) -> float:
    was = model.training
    model.eval()
    loss = lm_loss(model(windows).logits, windows, bos)
    model.train(was)
    return float(loss)


def _save_checkpoint(path: Path, model, opt, step: int, history: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
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


def export(model: SinkGPTForCausalLM, tokenizer, out: Path, summary: dict) -> None:
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
        for n in names:
            publish_mode(Path(tmp) / n)
            os.replace(Path(tmp) / n, out / n)


def keep_checkpoint(model, tokenizer, out: Path, step: int, summary: dict) -> Path:
    """Write the weights of ``step`` as a HF directory ``out/checkpoints/step-NNNNNN`` (the
    :func:`export` layout, ``summary`` as its ``training.json``), atomically: a directory of that
    name is always complete. One kept earlier under the name is replaced."""
    import tempfile

    parent = out / CHECKPOINTS
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


def train(
    cfg: TrainConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    force: bool = False,
    tokenizer=None,
    data: dict | None = None,
    progress: bool = True,
    command: str = "",
    device: str = "cpu",
    on_eval=None,
    save_at=None,
) -> dict:
    """Train (or resume) a run in ``out``; returns the ``training.json`` summary.

    ``on_eval(dict)`` is called with every readout (step, validation loss, sink). ``out`` must
    be new, empty or an earlier sinkscope run (its ``.sinkscope`` marker): ``force`` clears only
    such a directory, and only the files a run writes. ``save_at`` (``--save-at``: text such as
    ``"0,100,200"`` or a sequence of steps in ``0..cfg.steps``) keeps the weights of those steps
    in ``out/checkpoints/`` (:func:`keep_checkpoint`); a resumed run keeps the ones it has.
    """
    cfg.validate()
    save_at = save_at_steps(save_at, cfg.steps) if save_at is not None else ()
    resolve_device(device)
    out = check_owned(
        out, "train", legacy=looks_like_run
    )  # --force and --resume only touch sinkscope's own runs
    ckpt = out / "checkpoint.pt"
    if out.exists() and any(p.name != MARKER for p in out.iterdir()) and not resume and not force:
        raise SinkscopeError(
            f"--out {out} already holds a run; pass --resume to continue it or --force to start over"
        )
    if resume and not ckpt.exists():
        raise SinkscopeError(f"--resume: {ckpt} does not exist; start the run without --resume")
    new = not out.exists()
    claim_dir(out, "train")
    before = {p.name for p in out.iterdir()}
    with exclusive_dir(out, "sinkscope train"):
        try:
            return _train(
                cfg,
                out,
                resume,
                force,
                tokenizer,
                data,
                progress,
                command,
                device,
                on_eval,
                save_at,
            )
        except BaseException:
            if (
                not ckpt.exists()
            ):  # failed or stopped before its first checkpoint: leave no half-made run
                if new:
                    shutil.rmtree(out, ignore_errors=True)
                else:  # only what this call added (a fresh tokenizer): never the user's own files
                    for p in out.iterdir():
                        if p.name not in before:
                            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(
                                missing_ok=True
                            )
            raise


def looks_like_run(path: Path) -> bool:
    """An unmarked run directory of a sinkscope before markers: a tokenizer it fitted plus a
    checkpoint or a finished run's ``training.json``."""
    return (path / "tokenizer" / "tokenizer.json").exists() and (
        (path / "checkpoint.pt").exists() or (path / "training.json").exists()
    )


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


def _train(
    cfg: TrainConfig,
    out: Path,
    resume: bool,
    force: bool,
    tokenizer,
    data,
    progress: bool,
    command: str,
    device: str,
    on_eval,
    save_at: tuple[int, ...] = (),
) -> dict:
    from tqdm.auto import tqdm

    ckpt = out / "checkpoint.pt"
    if force and not resume:
        if (
            out / "tokenizer" / "tokenizer.json"
        ).exists():  # a fresh start fits a fresh tokenizer (e.g. another --vocab)
            shutil.rmtree(out / "tokenizer")
        if (out / CHECKPOINTS).is_dir():  # the kept steps of the run being replaced
            shutil.rmtree(out / CHECKPOINTS)
        for p in out.iterdir():
            if p.is_file() and (
                p.name in ("checkpoint.pt", "config.json", "training.json")
                or p.suffix in (".safetensors", ".json", ".txt")
            ):
                p.unlink()
    state = load_checkpoint(ckpt) if resume else None
    if state is not None:
        saved = TrainConfig.from_dict(state["history"]["config"])
        if asdict(saved) | {"steps": cfg.steps} != asdict(cfg) | {"steps": cfg.steps}:
            diff = [k for k, v in asdict(cfg).items() if asdict(saved)[k] != v and k != "steps"]
            raise SinkscopeError(
                f"--resume with different settings ({', '.join(diff)}); resume with the run's own settings"
            )
    texts = data if data is not None else training_texts(cfg.data)
    tokenizer = tokenizer_in(out / "tokenizer", texts, cfg.vocab, tokenizer)
    train_ids, val_ids = token_streams(texts, tokenizer)
    for split, streams in (("training", train_ids), ("held-out", val_ids)):
        short = {k: len(v) for k, v in streams.items() if len(v) <= cfg.context}
        if short:
            k, n = min(short.items(), key=lambda kv: kv[1])
            raise SinkscopeError(
                f"the {split} tokens of domain '{k}' ({n}) do not fill one --context {cfg.context} window; "
                "use a shorter --context or more --data"
            )
    eos_id = tokenizer.convert_tokens_to_ids(SPECIAL)
    weights = None
    if (
        cfg.synthetic > 0
    ):  # training windows only: validation loss and the sink probe stay on the text domains
        text = sorted(train_ids)
        alphabet = tokenizer.convert_tokens_to_ids(list(RESERVED))
        if any(a is None or a == tokenizer.unk_token_id for a in alphabet):
            raise SinkscopeError(
                "--synthetic needs a tokenizer with sinkscope's reserved <|synN|> tokens; let train fit one (drop --tokenizer)"
            )
        train_ids["synthetic"] = SYNTHETIC[cfg.task](
            alphabet, max(len(v) for v in train_ids.values()), seed=cfg.seed, eos_id=eos_id
        )
        weights = {**{k: (1 - cfg.synthetic) / len(text) for k in text}, "synthetic": cfg.synthetic}
    bos_id = tokenizer.convert_tokens_to_ids(SPECIAL) if cfg.bos else None

    torch.manual_seed(cfg.seed)
    model = SinkGPTForCausalLM(cfg.model_config(tokenizer))
    model.config._attn_implementation = "sdpa"
    model.to(device)
    opt = _optimizer(model, cfg)
    history = {"config": asdict(cfg), "losses": [], "evals": [], "seconds": 0.0}
    step = 0
    if state is not None:
        try:
            model.load_state_dict({k: v.to(device) for k, v in state["model"].items()})
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise SinkscopeError(
                f"--resume: {ckpt} does not fit this run's model ({str(e).strip().splitlines()[0][:120]}); "
                "resume with the run's own tokenizer and settings, or start over with --force"
            ) from None
        step, history = state["step"], state["history"]
        if step > cfg.steps:
            raise SinkscopeError(
                f"--steps {cfg.steps} is below the {step} steps the checkpoint already has; pass --steps {step} or more"
            )
        history["config"]["steps"] = cfg.steps
        lost = [
            s
            for s in save_at
            if s < step and not (out / CHECKPOINTS / checkpoint_name(s) / "config.json").exists()
        ]
        if lost:
            raise SinkscopeError(
                f"--save-at {','.join(map(str, lost))}: this run resumes from step {step} and did not keep "
                f"{'that step' if len(lost) == 1 else 'those steps'}; drop {'it' if len(lost) == 1 else 'them'} "
                "from --save-at or start over with --force"
            )
    probe = sample_windows(val_ids, 48, PROBE_T, seed=10_007, step=0, bos_id=bos_id).to(device)
    val = sample_windows(val_ids, 64, cfg.context, seed=10_009, step=0, bos_id=bos_id).to(device)
    t0 = time.perf_counter() - history["seconds"]

    def keep(step: int) -> None:
        """The weights of ``step`` as a HF directory, with the readouts of that moment."""
        info = {
            "step": step,
            "config": asdict(cfg),
            "command": command,
            "run": str(out),
            "seconds": round(time.perf_counter() - t0, 1),
            "val_loss": _val_loss(model, val, cfg.bos),
            "sink": probe_sink(model, probe),
            "torch": torch.__version__,
        }
        keep_checkpoint(model, tokenizer, out, step, info)

    if step in save_at and (
        state is None or not (out / CHECKPOINTS / checkpoint_name(step) / "config.json").exists()
    ):
        keep(step)  # step 0 of a fresh run (the initial weights), or the step a run resumes from
    model.train()
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        desc=f"train {out.name}",
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
    )
    postfix: dict = {}
    while step < cfg.steps:
        x = sample_windows(train_ids, cfg.batch, cfg.context, cfg.seed, step, bos_id, weights).to(
            device
        )  # [batch, pos]
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        loss = lm_loss(model(x).logits, x, cfg.bos)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        history["losses"].append(round(float(loss.detach()), 6))
        postfix["loss"] = f"{float(loss.detach()):.3f}"
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            ev = {
                "step": step,
                "val_loss": _val_loss(model, val, cfg.bos),
                "sink": probe_sink(model, probe),
            }
            history["evals"].append(ev)
            if on_eval is not None:
                on_eval(ev)
            postfix["sink"] = f"{ev['sink']:.3f}"
        if step in save_at:
            keep(step)
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)
        if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.steps:
            history["seconds"] = time.perf_counter() - t0
            _save_checkpoint(ckpt, model, opt, step, history)
    bar.close()
    history["seconds"] = time.perf_counter() - t0
    final = {"val_loss": _val_loss(model, val, cfg.bos), "sink": probe_sink(model, probe)}
    summary = {
        "step": step,
        "config": asdict(cfg),
        "command": command,
        "final": final,
        "evals": history["evals"],
        "losses": history["losses"],
        "seconds": round(history["seconds"], 1),
        "n_params": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
        "train_tokens": {k: len(v) for k, v in train_ids.items()},
        "save_at": list(save_at),
        "checkpoints": [f"{CHECKPOINTS}/{checkpoint_name(s)}" for s in save_at],
    }
    _save_checkpoint(ckpt, model, opt, step, history)
    export(model, tokenizer, out, summary)
    return summary
