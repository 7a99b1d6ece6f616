"""``sinkscope train``: a small GPT-2-style LM with each sink-circuit component switchable.

The run directory holds ``checkpoint.pt`` (model, optimiser, step, history; replaced atomically
every ``ckpt_every`` steps) and the tokenizer from the start; at the end a HF model directory
(``config.json``, ``model.safetensors``, tokenizer, ``training.json``) that every sinkscope
command loads. ``save_at`` steps (``--save-at``) are kept as such directories too, in
``checkpoints/step-NNNNNN/`` (step 0: the initial weights), each recording its step
(``training.json`` ``step``, ``config.json`` ``sinkscope_step``). Batches and initialisation depend only on the seed, so a run resumed from a
checkpoint follows the uninterrupted run's loss curve exactly (on the same machine).

This module is the training loop; the run directory's files are :mod:`.checkpoints`, the loss
and sink readouts :mod:`.readouts`, the optimiser :mod:`.optim` (all re-exported here). The loop looks up
``sample_windows`` and the readouts in this module, so tests patch them here.

>>> import tempfile
>>> cfg = TrainConfig(n_layer=1, n_embd=16, n_head=2, context=40, batch=2, steps=2, vocab=300, eval_every=0)
>>> r = train(cfg, tempfile.mkdtemp() + "/m", data=tiny_texts(), progress=False)
>>> len(r["losses"]), r["config"]["steps"]
(2, 2)
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import SinkscopeError
from ..io import MARKER, check_owned, claim_dir, exclusive_dir, record_files
from ..io import publish_mode as publish_mode  # importable from here as before the split
from ..io import write_json_atomic as write_json_atomic
from ..models.loading import resolve_device
from ..models.sinkgpt import SinkGPTForCausalLM
from .checkpoints import (
    clear_run,
    earlier_run,
    export,
    is_kept,
    keep_checkpoint,
    load_checkpoint,
    looks_like_run,  # noqa: F401  (re-exported: train --resume recognises an earlier run)
    run_reads,
)
from .checkpoints import save_checkpoint as _save_checkpoint
from .config import CHECKPOINTS, PROBE_T, TrainConfig, checkpoint_name, save_at_steps
from .data import (
    RESERVED,
    SPECIAL,
    SYNTHETIC,
    sample_windows,
    save_tokenizer,
    tiny_texts,  # noqa: F401  (importable from here, as the doctest uses it)
    token_streams,
    tokenizer_in,
    training_texts,
)
from .optim import learning_rate as _lr
from .optim import make_optimizer as _optimizer
from .readouts import lm_loss, probe_sink
from .readouts import validation_loss as _val_loss

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from transformers import PreTrainedTokenizerBase


def train(
    cfg: TrainConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    force: bool = False,
    tokenizer: PreTrainedTokenizerBase | None = None,
    data: dict | None = None,
    progress: bool = True,
    command: str = "",
    device: str = "cpu",
    on_eval: Callable[[dict], object] | None = None,
    save_at: str | Iterable[int] | None = None,
) -> dict:
    """Train (or resume) a run in ``out``; returns the ``training.json`` summary.

    ``on_eval(dict)`` is called with every readout (step, validation loss, sink). ``out`` must
    be new, empty or an earlier sinkscope run (its ``.sinkscope`` marker): ``force`` clears only
    such a directory, only the files its marker lists as written by a run, never a file this
    run reads, and only once every user error (data, context, tokenizer) is ruled out. ``save_at`` (``--save-at``: text such as
    ``"0,100,200"`` or a sequence of steps in ``0..cfg.steps``) keeps the weights of those steps
    in ``out/checkpoints/`` (:func:`keep_checkpoint`); a resumed run keeps the ones it has.
    """
    cfg.validate()
    save_at = save_at_steps(save_at, cfg.steps) if save_at is not None else ()
    resolve_device(device)
    # --force and --resume only touch sinkscope's own (marked) runs; --resume also continues an
    # unmarked run of an earlier sinkscope whose checkpoint.pt reads as a sinkscope checkpoint
    out = check_owned(out, "train", legacy=earlier_run if resume else None)
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


@dataclass
class _Tokens:
    """A run's tokenizer and token streams per domain; ``weights``: the domains' shares of the
    training windows (None: uniform), ``bos_id``: the token each window starts with (or None)."""

    tokenizer: object
    train_ids: dict
    val_ids: dict
    weights: dict | None
    bos_id: int | None


@dataclass
class _Run:
    """What the loop, its readouts and the kept steps share; ``t0``: when the run started
    (back-dated by the seconds a resumed run had already trained)."""

    cfg: TrainConfig
    out: Path
    command: str
    model: SinkGPTForCausalLM
    opt: torch.optim.Optimizer
    tokens: _Tokens
    probe: torch.Tensor  # [48, PROBE_T] held-out windows for the sink readout
    val: torch.Tensor  # [64, context] held-out windows for the validation loss
    t0: float

    def readout(self) -> dict:
        """The validation loss and the sink probe, in the order ``training.json`` lists them."""
        return {
            "val_loss": _val_loss(self.model, self.val, self.cfg.bos),
            "sink": probe_sink(self.model, self.probe),
        }

    def keep(self, step: int) -> None:
        """The weights of ``step`` as a HF directory, with the readouts of that moment."""
        info = {
            "step": step,
            "config": asdict(self.cfg),
            "command": self.command,
            "run": str(self.out),
            "seconds": round(time.perf_counter() - self.t0, 1),
            **self.readout(),
            "torch": torch.__version__,
        }
        keep_checkpoint(self.model, self.tokens.tokenizer, self.out, step, info)


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
    """:func:`train` once ``out`` is checked and held: set up (or restore) the run, train it to
    ``cfg.steps`` and export it. The order of the steps fixes the RNG use, so keep it."""
    ckpt = out / "checkpoint.pt"
    state = _resumed_state(ckpt, cfg) if resume else None
    fresh = force and not resume
    tokens = _tokens(cfg, out, tokenizer, data, fresh)  # every user error before anything goes
    model_config = cfg.model_config(tokens.tokenizer)
    if fresh:
        clear_run(out, run_reads(cfg.data, tokenizer, out))
    record_files(out, ["tokenizer"])
    save_tokenizer(out / "tokenizer", tokens.tokenizer)
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed alone
    model = SinkGPTForCausalLM(model_config)
    model.config._attn_implementation = "sdpa"
    model.to(device)
    opt = _optimizer(model, cfg)
    history = {"config": asdict(cfg), "losses": [], "evals": [], "seconds": 0.0}
    step = 0
    if state is not None:
        step, history = _restore(model, opt, state, ckpt, cfg, out, save_at, device)
    val_ids, bos_id = tokens.val_ids, tokens.bos_id
    probe = sample_windows(val_ids, 48, PROBE_T, seed=10_007, step=0, bos_id=bos_id).to(device)
    val = sample_windows(val_ids, 64, cfg.context, seed=10_009, step=0, bos_id=bos_id).to(device)
    t0 = time.perf_counter() - history["seconds"]  # a resumed run's clock goes on
    run = _Run(cfg, out, command, model, opt, tokens, probe, val, t0)
    if step in save_at and (state is None or not is_kept(out, step)):
        run.keep(
            step
        )  # step 0 of a fresh run (the initial weights), or the step a run resumes from
    step = _loop(run, step, history, device, progress, on_eval, save_at)
    history["seconds"] = time.perf_counter() - run.t0
    summary = _summary(run, step, history, save_at)
    _save_checkpoint(ckpt, model, opt, step, history)
    export(model, tokens.tokenizer, out, summary)
    return summary


def _resumed_state(ckpt: Path, cfg: TrainConfig) -> dict:
    """The checkpoint a ``--resume`` continues, refused unless its settings are ``cfg``'s (only
    ``steps`` may grow)."""
    state = load_checkpoint(ckpt)
    saved = TrainConfig.from_dict(state["history"]["config"])
    if asdict(saved) | {"steps": cfg.steps} != asdict(cfg) | {"steps": cfg.steps}:
        diff = [k for k, v in asdict(cfg).items() if asdict(saved)[k] != v and k != "steps"]
        raise SinkscopeError(
            f"--resume with different settings ({', '.join(diff)}); resume with the run's own settings"
        )
    return state


def _tokens(cfg: TrainConfig, out: Path, tokenizer, data, fresh: bool = False) -> _Tokens:
    """The run's tokenizer (the one in ``out/tokenizer`` unless ``fresh``, else fitted; saved
    there by the caller) and its token streams, checked to fill a window; ``--synthetic`` mixes
    a synthetic domain into the training windows. Writes nothing."""
    texts = data if data is not None else training_texts(cfg.data)
    tokenizer = tokenizer_in(
        out / "tokenizer", texts, cfg.vocab, tokenizer, save=False, fresh=fresh
    )
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
    return _Tokens(tokenizer, train_ids, val_ids, weights, bos_id)


def _restore(
    model, opt, state: dict, ckpt: Path, cfg: TrainConfig, out: Path, save_at, device: str
) -> tuple[int, dict]:
    """Load a resumed run's weights and optimiser; its ``(step, history)``, checked against
    ``--steps`` and the kept steps ``--save-at`` asks for."""
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
    lost = [s for s in save_at if s < step and not is_kept(out, s)]
    if lost:
        raise SinkscopeError(
            f"--save-at {','.join(map(str, lost))}: this run resumes from step {step} and did not keep "
            f"{'that step' if len(lost) == 1 else 'those steps'}; drop {'it' if len(lost) == 1 else 'them'} "
            "from --save-at or start over with --force"
        )
    return step, history


def _loop(
    run: _Run, step: int, history: dict, device: str, progress: bool, on_eval, save_at
) -> int:
    """Train from ``step`` to ``cfg.steps``: readouts every ``eval_every`` steps, kept steps,
    ``checkpoint.pt`` every ``ckpt_every``; returns the last step."""
    from tqdm.auto import tqdm

    cfg, model, opt, tokens = run.cfg, run.model, run.opt, run.tokens
    ckpt = run.out / "checkpoint.pt"
    model.train()
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        desc=f"train {run.out.name}",
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
    )
    postfix: dict = {}
    while step < cfg.steps:
        x = sample_windows(
            tokens.train_ids, cfg.batch, cfg.context, cfg.seed, step, tokens.bos_id, tokens.weights
        ).to(device)  # [batch, pos]
        loss = _optimise(run, x, step)
        step += 1
        history["losses"].append(round(float(loss.detach()), 6))
        postfix["loss"] = f"{float(loss.detach()):.3f}"
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            ev = {"step": step, **run.readout()}
            history["evals"].append(ev)
            if on_eval is not None:
                on_eval(ev)
            postfix["sink"] = f"{ev['sink']:.3f}"
        if step in save_at:
            run.keep(step)
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)
        if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.steps:
            history["seconds"] = time.perf_counter() - run.t0
            _save_checkpoint(ckpt, model, opt, step, history)
    bar.close()
    return step


def _optimise(run: _Run, x: torch.Tensor, step: int) -> torch.Tensor:
    """One optimiser step on the batch ``x [batch, pos]`` at ``step``'s learning rate; its loss."""
    cfg, model, opt = run.cfg, run.model, run.opt
    for g in opt.param_groups:
        g["lr"] = _lr(cfg, step)
    loss = lm_loss(model(x).logits, x, cfg.bos)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return loss


def _summary(run: _Run, step: int, history: dict, save_at) -> dict:
    """The finished run's ``training.json`` (its final readouts taken now)."""
    final = run.readout()
    return {
        "step": step,
        "config": asdict(run.cfg),
        "command": run.command,
        "final": final,
        "evals": history["evals"],
        "losses": history["losses"],
        "seconds": round(history["seconds"], 1),
        "n_params": sum(p.numel() for p in run.model.parameters()),
        "torch": torch.__version__,
        "train_tokens": {k: len(v) for k, v in run.tokens.train_ids.items()},
        "save_at": list(save_at),
        "checkpoints": [f"{CHECKPOINTS}/{checkpoint_name(s)}" for s in save_at],
    }
