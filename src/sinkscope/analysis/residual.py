"""Read the residual stream entering each block during an ordinary forward pass."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable, Iterator

import torch

if TYPE_CHECKING:
    from ..models import Adapter


@contextlib.contextmanager
def on_block_inputs(adapter: Adapter, fn: Callable[[int, torch.Tensor], None]) -> Iterator[None]:
    """Call ``fn(layer, resid_pre [batch, pos, d_model])`` as each block starts.

    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from sinkscope.models import adapter_for
    >>> m = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2)); seen = []
    >>> with on_block_inputs(adapter_for(m), lambda l, x: seen.append((l, tuple(x.shape)))):
    ...     _ = m(torch.zeros(1, 5, dtype=torch.long))
    >>> seen
    [(0, (1, 5, 16)), (1, (1, 5, 16))]
    """
    handles = []
    for layer, block in enumerate(adapter.layers()):

        def hook(mod, args, kwargs, layer=layer):
            x = args[0] if args else kwargs["hidden_states"]
            fn(layer, x)

        handles.append(block.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
