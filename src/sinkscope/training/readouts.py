"""The numbers a training run reads off its model: the next-token loss it optimises, the
held-out loss and the live sink probe (``sinkscope train``'s evaluation readouts)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..models.sinkgpt import SinkGPTForCausalLM


def probe_sink(model: SinkGPTForCausalLM, probe: torch.Tensor) -> float:
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
    from ``<|endoftext|>`` alone (the first text token) is not scored.

    >>> ids = torch.tensor([[0, 1, 2]])
    >>> round(float(lm_loss(torch.zeros(1, 3, 4), ids, bos=False)), 4)  # uniform over 4 tokens
    1.3863
    """
    start = 1 if bos else 0
    return torch.nn.functional.cross_entropy(
        logits[:, start:-1].reshape(-1, logits.shape[-1]), ids[:, start + 1 :].reshape(-1)
    )


@torch.no_grad()
def validation_loss(model: SinkGPTForCausalLM, windows: torch.Tensor, bos: bool) -> float:
    """:func:`lm_loss` of ``windows`` in eval mode; the model's train / eval mode is restored."""
    was = model.training
    model.eval()
    loss = lm_loss(model(windows).logits, windows, bos)
    model.train(was)
    return float(loss)
