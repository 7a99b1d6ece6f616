"""``sinkscope head-entropy``: the entropy (nats) of each head's attention rows, per layer ×
head, averaged over the query window (the second half of each input, as the paper's metric) and
over inputs. A sink head has low entropy: its rows pile onto index 0.

Entropy needs every key of a row, which sinkscope's capture never keeps (it keeps attention to a
few keys). So this stage asks the capture for all keys but reduces each layer's rows to their
entropy inside the capture's hook, as the layer runs: only one layer's ``[batch, head, T, T]``
rows exist at a time, never every layer's patterns at once.

>>> HeadEntropyConfig().name, HeadEntropyConfig.steps[0].name
('head-entropy', 'head_entropy')
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sinkscope.registry import Stage, Step, option, register_stage


@dataclass(frozen=True)
class HeadEntropyRecord:
    """What the report reads from ``summary.json`` (sinkscope's record reader checks types)."""

    layer_band: list[int]
    band_mean: float  # mean entropy over the band's heads
    max_entropy: float  # log(query position + 1) averaged over the window: uniform attention
    lowest: list[dict] = field(default_factory=list)  # the lowest-entropy heads


@dataclass
class HeadEntropyResult:
    model: str
    entropy: object  # numpy [layer, head]: mean over inputs and window queries (nats)
    band: tuple[int, int]
    max_entropy: float
    n_examples: int
    top: int = 5

    tables = {"head_entropy.csv": "mean row entropy (nats) per layer × head"}

    def frames(self) -> dict:
        import numpy as np
        import pandas as pd

        L, H = self.entropy.shape
        layer, head = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
        lo, hi = self.band
        return {
            "head_entropy": pd.DataFrame(
                {
                    "layer": layer.ravel(),
                    "head": head.ravel(),
                    "entropy": self.entropy.ravel(),
                    "in_band": ((layer >= lo) & (layer < hi)).ravel(),
                }
            )
        }

    def summary(self) -> dict:
        f = self.frames()["head_entropy"]
        band = f[f.in_band]
        low = band.nsmallest(self.top, "entropy")[["layer", "head", "entropy"]]
        return {
            "model": self.model,
            "n_examples": self.n_examples,
            "layer_band": list(self.band),
            "band_mean": float(band.entropy.mean()),
            "max_entropy": self.max_entropy,
            "lowest": low.to_dict(orient="records"),
        }

    def write(self, out, *, figures: bool = True, extra: dict | None = None) -> dict[str, str]:
        from pathlib import Path

        from sinkscope.io import write_json_atomic
        from sinkscope.report.figures import save_figure, subplots, title
        from sinkscope.report.formats import figure_name

        out = Path(out)
        self.frames()["head_entropy"].to_csv(
            out / "head_entropy.csv", index=False, float_format="%.7g"
        )
        write_json_atomic(out / "summary.json", self.summary() | (extra or {}))
        if not figures:
            return {}
        # sinkscope's figure helpers: wrapped titles, constrained layout, the run's --format
        fig, ax = subplots(figsize=(6, 4))
        im = ax.imshow(self.entropy.T, aspect="auto", cmap="viridis_r", origin="lower")
        ax.set(xlabel="layer", ylabel="head")
        title(ax, f"{self.model}: attention row entropy (nats)")
        fig.colorbar(im, ax=ax, label=f"nats (uniform: {self.max_entropy:.2f})")
        name = figure_name("head_entropy")
        save_figure(fig, out / name)
        return {
            name: "Mean entropy of each head's attention rows (query window); "
            "light = low entropy (a sink head piles its rows onto few keys)."
        }

    def format(self) -> str:
        s = self.summary()
        low = ", ".join(f"L{r['layer']}H{r['head']} {r['entropy']:.2f}" for r in s["lowest"])
        return (
            f"model {self.model}: mean row entropy in layers {self.band[0]}..{self.band[1] - 1}"
            f" {s['band_mean']:.3f} nats (uniform attention: {self.max_entropy:.3f}); "
            f"lowest heads: {low}"
        )


def row_entropy(model, inputs, *, batch_size: int = 32, progress: bool = True):
    """``[layer, head]`` mean entropy of the query window's attention rows, and the uniform
    level. Each layer's rows are reduced to entropies in the capture hook as the layer runs."""
    import torch
    from tqdm.auto import tqdm

    from sinkscope.metrics import KeyAttentionCapture

    ad = model.adapter
    T = int(inputs.ids.shape[1])
    lengths = inputs.lengths if inputs.ragged else torch.full((len(inputs),), T)
    pos = torch.arange(T)

    class EntropyCapture(KeyAttentionCapture):
        def _record(self, layer, probs, query, key, aux=None):  # probs [batch, head, T, T]
            p = probs.float()
            h = -torch.special.xlogy(p, p).sum(-1)  # [batch, head, q_pos]
            self.probs[layer] = h  # one [batch, head, T] per layer: the rows are gone

    total = torch.zeros(ad.n_layers, ad.n_heads, dtype=torch.float64)
    count = 0
    with torch.inference_mode(), EntropyCapture(ad, tuple(range(T))) as cap:
        for start in tqdm(
            range(0, len(inputs), batch_size),
            desc=f"head-entropy {model.name}",
            unit="batch",
            disable=not progress,
        ):
            ids = inputs.ids[start : start + batch_size].to(model.device)
            n = lengths[start : start + batch_size]
            cap.reset()
            ad.trunk()(input_ids=ids, use_cache=False)
            h = torch.stack([cap.probs[layer] for layer in range(ad.n_layers)], 1).cpu().double()
            window = (pos[None] >= (n[:, None] // 2)) & (pos[None] < n[:, None])  # [batch, T]
            w = window[:, None, None, :].double()
            total += ((h * w).sum(-1) / w.sum(-1)).sum(0)  # mean over each input's window
            count += len(ids)
    uniform = float(
        torch.stack(
            [torch.log(torch.arange(int(m) // 2, int(m)) + 1.0).mean() for m in lengths]
        ).mean()
    )
    return (total / count).numpy(), uniform


@register_stage
@dataclass
class HeadEntropyConfig(Stage):
    """The stage: nothing to set but the band (shared) and the report's number of heads."""

    top: int = option(5, "--top", "how many lowest-entropy heads the summary lists", parse=int)

    name = "head-entropy"
    help = "entropy of each head's attention rows (query window, per layer x head, nats)"
    title = "Attention entropy per head (plugin: sinkscope-head-entropy)"
    example = "sinkscope head-entropy --per-domain 5"
    record = HeadEntropyRecord
    steps = (Step("head_entropy", order=100, after=()),)

    def check(self) -> None:
        from sinkscope.errors import SinkscopeError

        if self.top < 1:
            raise SinkscopeError(f"--top {self.top} must be at least 1")

    def compute(
        self, model, inputs, facts=None, *, band=None, batch_size: int = 32, progress: bool = True
    ) -> HeadEntropyResult:
        from sinkscope.metrics import resolve_band

        band = resolve_band(band, model.adapter.n_layers)
        ent, uniform = row_entropy(model, inputs, batch_size=batch_size, progress=progress)
        return HeadEntropyResult(model.name, ent, band, uniform, len(inputs), self.top)

    @staticmethod
    def reading(r: HeadEntropyRecord) -> str:
        low = r.lowest[0] if r.lowest else None
        text = (
            f"In layers {r.layer_band[0]}..{r.layer_band[1] - 1} a head's attention row "
            f"carries {r.band_mean:.2f} nats on average, against {r.max_entropy:.2f} for "
            "uniform attention"
        )
        if low:
            text += (
                f"; the most concentrated head is layer {low['layer']} head {low['head']} "
                f"({low['entropy']:.2f} nats)"
            )
        return text + "."

    @staticmethod
    def section(r: HeadEntropyRecord) -> str:
        rows = "".join(
            f"<tr><td>{d['layer']}</td><td>{d['head']}</td>"
            f'<td class="n">{d["entropy"]:.3f}</td></tr>'
            for d in r.lowest
        )
        return (
            '<table class="tbl"><thead><tr><th>layer</th><th>head</th><th>entropy (nats)'
            f"</th></tr></thead><tbody>{rows}</tbody></table>"
        )
