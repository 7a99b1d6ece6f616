"""What determines a ``sinkscope train`` run, importable without torch (the CLI's options come
from these defaults)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from ..errors import SinkscopeError
from ..models.switches import NORMALISERS, POSITIONS

if TYPE_CHECKING:
    from collections.abc import Iterable

    from transformers import PreTrainedTokenizerBase

    from ..models.sinkgpt import SinkGPTConfig

PROBE_T = 40  # the paper's sequence length for the live sink readout
TASKS = ("repeat", "backcopy")  # synthetic domains (training/data.py: SYNTHETIC)


@dataclass
class TrainConfig:
    """Everything that determines a run (saved in ``training.json``)."""

    # architecture switches
    query_bias: bool = True
    positions: str = "learned"  # learned | rotary | none
    mlp: bool = True
    normaliser: str = "softmax"  # softmax | off_by_one | gated | sink_logit
    # size
    n_layer: int = 6
    n_embd: int = 128
    n_head: int = 4
    context: int = 64
    vocab: int = 4096
    # optimisation
    steps: int = 3000
    batch: int = 32
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    bos: bool = False  # every window starts with <|endoftext|>
    synthetic: float = 0.0  # share of training windows from a synthetic domain on reserved tokens
    task: str = "repeat"  # the synthetic domain: repeat (induction) | backcopy (bigram-backcopy)
    seed: int = 0
    data: str = "default"
    # bookkeeping
    eval_every: int = 250
    ckpt_every: int = 500

    def validate(self) -> None:
        if self.positions not in POSITIONS:
            raise SinkscopeError(
                f"--positions {self.positions!r}: choose one of {', '.join(POSITIONS)}"
            )
        if self.normaliser not in NORMALISERS:
            raise SinkscopeError(
                f"--normaliser {self.normaliser!r}: choose one of {', '.join(NORMALISERS)}"
            )
        flags = {
            "n_layer": "--layers",
            "n_embd": "--width",
            "n_head": "--heads",
            "context": "--context",
            "steps": "--steps",
            "batch": "--batch",
            "vocab": "--vocab",
        }
        for name, flag in flags.items():
            if getattr(self, name) < 1:
                raise SinkscopeError(f"{flag} {getattr(self, name)} must be positive")
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise SinkscopeError(
                f"--width {self.n_embd} must be a multiple of --heads {self.n_head} with an even head size"
            )
        for flag, x, ok, what in (
            ("--lr", self.lr, lambda v: 0 < v < 1e3, "a finite learning rate above 0"),
            (
                "--weight-decay",
                self.weight_decay,
                lambda v: 0 <= v < 1e3,
                "a finite decay of 0 or more",
            ),
            ("min_lr_ratio", self.min_lr_ratio, lambda v: 0 <= v <= 1, "a share in [0, 1]"),
            ("grad_clip", self.grad_clip, lambda v: 0 <= v < 1e9, "0 (off) or a finite norm"),
        ):
            if not math.isfinite(x) or not ok(x):
                raise SinkscopeError(f"{flag} {x} must be {what}")
        for flag, x in (
            ("--warmup", self.warmup),
            ("--eval-every", self.eval_every),
            ("--ckpt-every", self.ckpt_every),
        ):
            if x < 0:
                raise SinkscopeError(f"{flag} {x} must be 0 or more")
        if not 0 <= self.seed < 2**32:
            raise SinkscopeError(f"--seed {self.seed} must lie in [0, 2^32)")
        if self.context < PROBE_T:
            raise SinkscopeError(
                f"--context {self.context} is shorter than the {PROBE_T}-token sink probe (the paper's T); use --context >= {PROBE_T}"
            )
        if not 0 <= self.synthetic < 1:  # NaN fails this too
            raise SinkscopeError(
                f"--synthetic {self.synthetic} must be a share of windows in [0, 1)"
            )
        if self.task not in TASKS:
            raise SinkscopeError(f"--task {self.task!r}: choose one of {', '.join(TASKS)}")
        if self.vocab < 260:
            raise SinkscopeError(
                f"--vocab {self.vocab} is below the 256 byte tokens + specials; use >= 260"
            )

    def model_config(self, tokenizer: PreTrainedTokenizerBase) -> SinkGPTConfig:
        """The :class:`SinkGPTConfig` of this run (vocabulary and BOS from ``tokenizer``)."""
        from ..models.sinkgpt import SinkGPTConfig
        from .data import SPECIAL

        eos = tokenizer.convert_tokens_to_ids(SPECIAL)
        return SinkGPTConfig(
            vocab_size=len(tokenizer),
            n_positions=self.context,
            n_embd=self.n_embd,
            n_layer=self.n_layer,
            n_head=self.n_head,
            query_bias=self.query_bias,
            positions=self.positions,
            mlp=self.mlp,
            normaliser=self.normaliser,
            bos_token_id=eos,
            eos_token_id=eos,
        )

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


SAVE_AT_EXAMPLE = "e.g. 0,100,200,400"
CHECKPOINTS = "checkpoints"  # the run's kept steps: RUN/checkpoints/step-NNNNNN/


def checkpoint_name(step: int) -> str:
    """The directory name of the kept weights of ``step``: ``step-000100``."""
    return f"step-{step:06d}"


def save_at_steps(spec: str | Iterable[int], steps: int) -> tuple[int, ...]:
    """``train --save-at``: the steps whose weights a run keeps as HF checkpoints (0 = the initial
    weights), sorted and without repeats; ``spec`` is the option's text or a sequence of ints.
    Each must be a whole number in ``0..steps``.

    >>> save_at_steps("400, 0,100,100", 800)
    (0, 100, 400)
    >>> save_at_steps("0,900", 800)
    Traceback (most recent call last):
    sinkscope.errors.SinkscopeError: --save-at 0,900: step 900 is past the run's --steps 800; give steps in 0..800
    """
    text = spec if isinstance(spec, str) else ",".join(str(s) for s in spec)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise SinkscopeError(
            f"--save-at {text!r} names no step; give comma-separated training steps, {SAVE_AT_EXAMPLE}"
        )
    out = set()
    for p in parts:
        try:
            step = int(p)
        except ValueError:
            raise SinkscopeError(
                f"--save-at {text}: {p!r} is not a step; give comma-separated whole numbers, {SAVE_AT_EXAMPLE}"
            ) from None
        if step < 0:
            raise SinkscopeError(
                f"--save-at {text}: step {step} is negative; give steps of 0 (the initial weights) or more"
            )
        if step > steps:
            raise SinkscopeError(
                f"--save-at {text}: step {step} is past the run's --steps {steps}; give steps in 0..{steps}"
            )
        out.add(step)
    return tuple(sorted(out))
