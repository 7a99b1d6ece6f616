"""The rotary position embedding as sinkscope applies it: :class:`Rotary`, the rotation a layer
applies to queries and keys (rotate-half and GPT-J's interleaved pairs, partial rotary)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from typing import Any


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rotate_every_two(x: torch.Tensor) -> torch.Tensor:
    return torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)


@dataclass(frozen=True)
class Rotary:
    """The rotation ``R_i`` a layer applies to queries and keys at positions ``0..T-1``.

    ``cos, sin [T, rot]``: the first ``rot <= d_head`` dimensions of a head rotate, the rest pass
    through (partial rotary: GPT-NeoX, Phi, GPT-J). ``interleaved``: GPT-J pairs ``(2i, 2i+1)``;
    otherwise the rotate-half pairs ``(i, i + rot/2)`` of Llama and most others.

    >>> r = Rotary(torch.ones(3, 2), torch.zeros(3, 2))  # the identity on 2 of 4 dims
    >>> r.apply(torch.arange(12.).view(3, 4)).tolist()[0], r.T
    ([0.0, 1.0, 2.0, 3.0], 3)
    """

    cos: torch.Tensor
    sin: torch.Tensor
    interleaved: bool = False

    @property
    def T(self) -> int:
        return int(self.cos.shape[0])

    def apply(self, x: torch.Tensor, *, inverse: bool = False) -> torch.Tensor:
        """``R_i x_i`` (``inverse``: ``R_iᵀ x_i``) for ``x [..., T, d_head]``."""
        rot = self.cos.shape[-1]
        xr = x[..., :rot]
        turned = _rotate_every_two(xr) if self.interleaved else _rotate_half(xr)
        out = xr * self.cos + turned * (-self.sin if inverse else self.sin)
        return torch.cat((out, x[..., rot:]), dim=-1) if x.shape[-1] > rot else out

    def to(self, *args: Any, **kwargs: Any) -> "Rotary":
        return Rotary(self.cos.to(*args, **kwargs), self.sin.to(*args, **kwargs), self.interleaved)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_cos_sin(
    T: int, d_head: int, theta: float, device: torch.device | str | None, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos, sin [T, d_head]`` of GPT-NeoX-style rotary embeddings (whole head dimension)."""
    inv = 1.0 / (theta ** (torch.arange(0, d_head, 2, device=device, dtype=torch.float32) / d_head))
    # [T, d_head/2]
    ang = torch.arange(T, device=device, dtype=torch.float32)[:, None] * inv[None, :]
    emb = torch.cat((ang, ang), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [..., T, d_head]`` to its positions."""
    return x * cos + rotate_half(x) * sin
