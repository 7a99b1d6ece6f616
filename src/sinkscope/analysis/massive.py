"""Where index 0 becomes special: the residual stream at index 0 after every block.

For each block output (and the embeddings, "block -1"): the L2 norm at index 0 against the
median norm of the other positions, and the *massive activations* of index 0 (Sun et al. 2024):
coordinates whose mean |value| at index 0 is both above ``min_abs`` and ``ratio`` times the (torch, lower-middle)
median |activation| of that block. The *creating block* is the first one after which index 0's
norm exceeds ``norm_ratio`` times the others' (GPT-2: the first MLP acting on p_0).
Works for every architecture (it needs no b_Q and no absolute positions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from ..data import TokenizedInputs
    from ..models import SinkModel


@dataclass
class ResidualProfile:
    norm0: np.ndarray  # [block+1] mean over examples of ||a_0|| (entry 0: embeddings)
    norm_other: np.ndarray  # [block+1] mean over examples of the median ||a_j||, j >= 1
    abs0: np.ndarray  # [block+1, d_model] mean over examples of |a_0[d]|
    median_abs: (
        np.ndarray
    )  # [block+1] mean over examples of the median |a| over all positions and coordinates
    signed0: np.ndarray  # [block+1, d_model] mean over examples of a_0[d]

    def massive(
        self, block: int, ratio: float = 100.0, min_abs: float = 20.0
    ) -> tuple[list[int], list[float]]:
        """Massive coordinates of index 0 after ``block`` (-1 = embeddings), and their mean values."""
        i = block + 1
        idx = np.nonzero((self.abs0[i] > min_abs) & (self.abs0[i] > ratio * self.median_abs[i]))[0]
        idx = idx[np.argsort(-self.abs0[i, idx])]
        return [int(d) for d in idx], [float(self.signed0[i, d]) for d in idx]

    def creating_block(self, norm_ratio: float = 5.0) -> int | None:
        """First block (-1 = embeddings) after which ||a_0|| > norm_ratio × the others' median."""
        hits = np.nonzero(self.norm0 > norm_ratio * self.norm_other)[0]
        return int(hits[0]) - 1 if hits.size else None

    def table(self, ratio: float = 100.0, min_abs: float = 20.0) -> pd.DataFrame:
        rows = []
        for i in range(self.norm0.shape[0]):
            coords, values = self.massive(i - 1, ratio, min_abs)
            rows.append(
                {
                    "block": i - 1,
                    "norm_index0": self.norm0[i],
                    "median_norm_other": self.norm_other[i],
                    "norm_ratio": self.norm0[i] / self.norm_other[i],
                    "max_abs_index0": self.abs0[i].max(),
                    "median_abs": self.median_abs[i],
                    "massive_coords": " ".join(map(str, coords)),
                    "massive_values": " ".join(f"{v:.1f}" for v in values),
                }
            )
        return pd.DataFrame(rows)


def residual_profile(
    model: SinkModel, inputs: TokenizedInputs, *, batch_size: int = 32, progress: bool = True
) -> ResidualProfile:
    """Block outputs (via forward hooks) reduced per batch to index-0 statistics; no residuals kept."""
    ad = model.adapter
    ad.require_forward()
    sums = None
    n = 0
    for start in tqdm(
        range(0, len(inputs), batch_size),
        desc="residual stream",
        unit="batch",
        disable=not progress,
    ):
        ids = inputs.ids[start : start + batch_size].to(model.device)
        lengths = inputs.lengths[start : start + batch_size].to(model.device)
        acts: list[torch.Tensor] = []
        handles = [
            blk.register_forward_hook(
                lambda m, i, o: acts.append((o[0] if isinstance(o, tuple) else o).detach().float())
            )
            for blk in ad.layers()
        ]
        first: list[torch.Tensor] = []
        handles.append(
            ad.layers()[0].register_forward_pre_hook(
                lambda m, args, kwargs: first.append(
                    (args[0] if args else kwargs["hidden_states"]).detach().float()
                ),
                with_kwargs=True,
            )
        )
        try:
            with torch.inference_mode():
                ad.trunk()(input_ids=ids, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        a = torch.stack(first + acts, 0)  # [block+1, batch, pos, d_model]
        T = a.shape[2]
        valid = torch.arange(T, device=a.device)[None, :] < lengths[:, None]  # [batch, pos]
        norms = a.norm(dim=-1)  # [block+1, batch, pos]
        other = (
            norms[:, :, 1:].masked_fill(~valid[None, :, 1:], float("nan")).nanmedian(dim=-1).values
        )  # [block+1, batch]
        absa = a.abs()
        med = (
            absa.masked_fill(~valid[None, :, :, None], float("nan"))
            .flatten(2)
            .nanmedian(dim=-1)
            .values
        )  # [block+1, batch]
        batch = {
            "norm0": norms[:, :, 0].sum(1),
            "norm_other": other.sum(1),
            "abs0": absa[:, :, 0].sum(1),
            "median_abs": med.sum(1),
            "signed0": a[:, :, 0].sum(1),
        }
        sums = batch if sums is None else {k: sums[k] + v for k, v in batch.items()}
        n += a.shape[1]
    return ResidualProfile(**{k: (v / n).double().cpu().numpy() for k, v in sums.items()})
