"""``sinkscope measure``: batched sink measurement of one model on a set of inputs.

>>> import torch
>>> from transformers import GPT2Config, GPT2LMHeadModel
>>> from sinkscope.models import SinkModel, adapter_for
>>> from sinkscope.data import TokenizedInputs, Example
>>> hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4)).eval()
>>> sm = SinkModel("tiny", hf, adapter_for(hf))
>>> ti = TokenizedInputs(torch.randint(0, 100, (4, 12)), [Example("t", d) for d in "aabb"], {})
>>> r = measure(sm, ti, progress=False)
>>> r.metrics_frame().shape[0], sorted(r.summary()["bos_attention"])  # 4 examples x 2 layers x 4 heads
(32, ['a', 'all', 'b'])
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from ..errors import SinkscopeError
from ..parsing import parse_keys
from ..registry import Stage, Step, option, register_stage
from ..report.records import MeasureRecord

if TYPE_CHECKING:
    import os

    import numpy as np
    import pandas as pd

    from ..analysis.facts import CircuitFacts
    from ..data import TokenizedInputs
    from ..models import SinkModel


@dataclass
class MeasureResult:
    """Per example × layer × head sink metrics for one model and input set."""

    model: str
    inputs: TokenizedInputs
    keys: tuple[int, ...]
    key_attn: np.ndarray  # [example, layer, head, key]  second-half queries -> key
    alpha: np.ndarray  # [example, layer, head, key]  Gu et al.: queries i >= key -> key
    band: tuple[int, int]
    eps: float = 0.3
    seconds: float = 0.0
    model_info: dict = field(default_factory=dict)
    baseline: dict | None = None  # an earlier summary.json (--baseline): adds % of its means
    sink_logit: np.ndarray | None = (
        None  # [example, layer, head] second-half mass of a learned sink logit (GPT-OSS)
    )

    tables = {
        "metrics.csv": "every example × layer × head",
        "per_layer.csv": "BOS attention per layer and dataset",
        "inputs.jsonl": "each input's text and token ids",
    }

    @property
    def seq_len(self) -> int:
        return int(self.inputs.ids.shape[1])

    @property
    def bos_attention(self) -> np.ndarray:
        """``[example, layer, head]`` mean attention from the second-half queries to index 0."""
        if 0 not in self.keys:
            raise SinkscopeError("key 0 was not captured; include 0 in --keys")
        return self.key_attn[..., self.keys.index(0)]

    def frames(self) -> dict[str, pd.DataFrame]:
        """The result's tables, by CSV name: ``metrics``, ``per_layer``."""
        return {"metrics": self.metrics_frame(), "per_layer": self.per_layer_frame()}

    def metrics_frame(self) -> pd.DataFrame:
        """Tidy table: one row per example × layer × head."""
        import numpy as np
        import pandas as pd

        N, L, H, _ = self.key_attn.shape
        ex, layer, head = np.meshgrid(np.arange(N), np.arange(L), np.arange(H), indexing="ij")
        domains = np.asarray(self.inputs.domains, dtype=object)
        cols = {
            "example": ex.ravel(),
            "domain": domains[ex.ravel()],
            "layer": layer.ravel(),
            "head": head.ravel(),
        }
        for j, k in enumerate(self.keys):
            name = "bos_attention" if k == 0 else f"attn_to_{k}"
            cols[name] = self.key_attn[..., j].ravel()
        for j, k in enumerate(self.keys):
            cols[f"gu_alpha_{k}"] = self.alpha[..., j].ravel()
        if self.sink_logit is not None:  # with it, attention to every key + this mass = 1 per query
            cols["sink_logit_mass"] = self.sink_logit.ravel()
        return pd.DataFrame(cols)

    def per_layer_frame(self) -> pd.DataFrame:
        """Mean over examples and heads of each key's attention, per layer and domain."""
        import pandas as pd

        rows = []
        for dom, sel in self.inputs.domain_masks().items():
            ka = self.key_attn[sel].mean(axis=(0, 2))  # [layer, key]
            for layer in range(ka.shape[0]):
                row = {"domain": dom, "layer": layer}
                for j, k in enumerate(self.keys):
                    row["bos_attention" if k == 0 else f"attn_to_{k}"] = float(ka[layer, j])
                rows.append(row)
        return pd.DataFrame(rows)

    def summary(self, baseline: dict | None = None) -> dict:
        """The aggregates per domain over the layer band (and all layers), as ``summary.json``
        (with % of ``baseline``'s means, default: the result's own ``baseline``)."""
        from ..metrics.sink import SE_ESTIMATOR, aggregate, band_mean, sink_rate, uniform_baseline

        baseline = self.baseline if baseline is None else baseline
        L = self.key_attn.shape[1]
        groups = self.inputs.domain_masks()
        base = (baseline or {}).get("bos_attention", {})

        def agg(per_head, band, base_block=None):
            out = {}
            for dom, sel in groups.items():
                b = (base_block or {}).get(dom, {}).get("mean")
                out[dom] = aggregate(band_mean(per_head[sel], band), baseline=b)
            return out

        bos = self.bos_attention
        s = {
            "model": self.model,
            "model_info": self.model_info,
            "inputs": self.inputs.record(),
            "n_examples": len(self.inputs),
            "n_per_domain": {k: int(v.sum()) for k, v in groups.items() if k != "all"},
            "skipped_short": self.inputs.skipped,
            "seq_len": self.seq_len,
            "seq_len_range": [int(self.inputs.lengths.min()), int(self.inputs.lengths.max())],
            "layer_band": list(self.band),
            "query_window": [self.seq_len // 2, self.seq_len]
            if not self.inputs.ragged
            else "each input's second half",
            "uniform_baseline": uniform_baseline(self.inputs.lengths.tolist()),
            "se_estimator": SE_ESTIMATOR,  # the "se" of every aggregate below
            "bos_attention": agg(bos, self.band, base),
            "bos_attention_all_layers": agg(
                bos, (0, L), (baseline or {}).get("bos_attention_all_layers")
            ),
            "bos_attention_per_layer": {
                dom: bos[sel].mean(axis=(0, 2)).round(6).tolist() for dom, sel in groups.items()
            },
            "sink_rate": {"eps": self.eps, "key": 0}
            | {
                dom: sink_rate(self.alpha[sel][..., self.keys.index(0)], self.eps)
                for dom, sel in groups.items()
            },
            "key_attention": {
                str(k): {
                    dom: aggregate(band_mean(self.key_attn[sel][..., j], self.band))
                    for dom, sel in groups.items()
                }
                for j, k in enumerate(self.keys)
            },
            "seconds": round(self.seconds, 3),
        }
        if self.sink_logit is not None:
            s["sink_logit_mass"] = agg(self.sink_logit, self.band)
        return s

    def write(
        self, out: str | os.PathLike[str], *, figures: bool = True, extra: dict | None = None
    ) -> dict[str, str]:
        """Every ``measure`` output in the directory ``out``: ``metrics.csv``, ``per_layer.csv``,
        ``inputs.jsonl``, ``summary.json`` (:meth:`summary` plus ``extra``) and, with ``figures``,
        the four PNGs; returns ``{figure file: caption}``. ``sinkscope measure`` and reproduce's
        measure stage both write through here."""
        from pathlib import Path

        from ..io import write_json_atomic
        from ..report.figures import measure_figures

        out = Path(out)
        summary = self.summary() | (extra or {})
        self.metrics_frame().to_csv(out / "metrics.csv", index=False, float_format="%.7g")
        self.per_layer_frame().to_csv(out / "per_layer.csv", index=False, float_format="%.7g")
        self.inputs.write_jsonl(out / "inputs.jsonl")
        write_json_atomic(out / "summary.json", summary)
        return measure_figures(self, summary, out) if figures else {}

    def format(self) -> str:
        """The text ``sinkscope measure`` prints."""
        from ..report.sections import measure_text

        return measure_text(self.summary())


@register_stage
@dataclass
class MeasureConfig(Stage):
    """``sinkscope measure`` as a stage: sink strength per example × layer × head.

    >>> MeasureConfig(keys=(0, 1), eps=0.3).name
    'measure'
    """

    keys: tuple[int, ...] = option(
        (0, 1),
        "--keys",
        "comma-separated key positions whose attention is recorded (0 = the sink)",
        parse=parse_keys,
    )
    eps: float = option(
        0.3,
        "--eps",
        "threshold of Gu et al.'s Sink_k^eps: the share of heads "
        "whose mean attention to index 0 exceeds it",
        parse=float,
    )
    baseline: str | None = option(
        None,
        "--baseline",
        "an earlier measure summary.json: adds each mean as %% of its mean",
        metavar="SUMMARY.json",
    )

    name = "measure"
    help = "measure sink strength per example x layer x head"
    example = "sinkscope measure --per-domain 10 --keys 0,1,2"
    title = "Sink strength"
    record = MeasureRecord
    steps = (Step("measure", order=20, after=(), overrides={"keys": (0, 1)}),)

    def check(self) -> None:
        from ..errors import check_number

        check_number("--eps", self.eps, 0.0, 1.0, hi_open=True)
        from ..report.records import read_baseline

        self._baseline = read_baseline(self.baseline) if self.baseline else None

    def compute(
        self,
        model: SinkModel,
        inputs: TokenizedInputs | None,
        facts: CircuitFacts | None = None,
        *,
        band: tuple[int, int] | None = None,
        batch_size: int = 32,
        progress: bool = True,
    ) -> MeasureResult:
        r = measure(
            model,
            inputs,
            keys=self.keys,
            batch_size=batch_size,
            band=band,
            eps=self.eps,
            progress=progress,
        )
        r.baseline = getattr(self, "_baseline", None) if self.baseline else None
        return r

    @staticmethod
    def reading(m: MeasureRecord) -> str:
        from ..report.readings import strength

        a = m.bos_attention["all"]
        u = m.uniform_baseline
        text = (
            f"In layers {m.band_text} the average head sends {a.mean:.0%} of the attention of "
            f"the second half of each input to index 0 (±{2 * a.se:.4f}, 2SE), "
            f"{a.mean / u:.0f}× what uniform attention would give ({u:.3f}): "
            f"{strength(a.mean)}."
        )
        doms = {k: v.mean for k, v in m.bos_attention.items() if k != "all"}
        if len(doms) > 1:
            hi, lo = max(doms, key=doms.get), min(doms, key=doms.get)
            text += (
                f" It is strongest on {hi} ({doms[hi]:.3f}) and weakest on {lo} ({doms[lo]:.3f})."
            )
        per = m.bos_attention_per_layer.get("all")
        if per:
            top = max(range(len(per)), key=lambda i: per[i])
            text += f" Layer {top} sinks most ({per[top]:.2f}); layer 0 gives index 0 {per[0]:.2f}."
        return text

    @staticmethod
    def section(m: MeasureRecord) -> str:
        import pandas as pd

        from ..report.tables import fmt, html_table

        rows = []
        for dom, a in m.bos_attention.items():
            rows.append(
                {
                    "dataset": dom,
                    "n": a.n,
                    "BOS attention": fmt(a.mean),
                    "± 2SE": fmt(2 * a.se, ".4f"),
                    "all layers": fmt(m.bos_attention_all_layers[dom].mean),
                    f"Sink rate (ε={m.sink_rate['eps']:g})": fmt(m.sink_rate[dom]),
                }
            )
        return html_table(pd.DataFrame(rows))


def measure(
    model: SinkModel,
    inputs: TokenizedInputs,
    *,
    keys: Sequence[int] = (0, 1),
    batch_size: int = 32,
    band: tuple[int, int] | None = None,
    eps: float = 0.3,
    progress: bool = True,
) -> MeasureResult:
    """Run the model over ``inputs`` in batches and collect the sink metrics.

    Only attention to ``keys`` is captured (``[batch, layer, head, q_pos, key]`` per batch, then
    reduced to per-head numbers), so memory does not grow with ``T²·layers``.
    """
    import torch
    from tqdm.auto import tqdm

    from ..metrics import KeyAttentionCapture, gu_alpha, key_attention, resolve_band

    ad = model.adapter
    ad.require_forward()
    keys = tuple(int(k) for k in keys)
    shortest = int(inputs.lengths.min())
    if max(keys) >= shortest:
        raise SinkscopeError(
            f"--keys {max(keys)} is beyond the shortest ({shortest}-token) input; use positions below {shortest}"
        )
    L = ad.n_layers
    band = resolve_band(band, L)
    trunk = ad.trunk()
    device = model.device
    key_attn, alpha, sink_logit = [], [], []
    t0 = time.perf_counter()
    batches = range(0, len(inputs), batch_size)
    with torch.inference_mode(), KeyAttentionCapture(ad, keys) as cap:
        for start in tqdm(
            batches, desc=f"measure {model.name}", unit="batch", disable=not progress
        ):
            ids = inputs.ids[start : start + batch_size].to(device)
            lengths = inputs.lengths[start : start + batch_size] if inputs.ragged else None
            cap.reset()
            trunk(
                input_ids=ids, use_cache=False
            )  # right padding needs no mask: attention is causal
            probs = cap.stacked().float()  # [batch, layer, head, q_pos, key]
            key_attn.append(
                torch.stack(
                    [key_attention(probs, j, lengths=lengths) for j in range(len(keys))], -1
                ).cpu()
            )
            alpha.append(
                torch.stack(
                    [gu_alpha(probs, j, k, lengths=lengths) for j, k in enumerate(keys)], -1
                ).cpu()
            )
            aux = cap.stacked_aux()  # [batch, layer, head, q_pos] or None
            if aux is not None:
                sink_logit.append(key_attention(aux.float()[..., None], 0, lengths=lengths).cpu())
    return MeasureResult(
        model=model.name,
        inputs=inputs,
        keys=keys,
        key_attn=torch.cat(key_attn).numpy(),
        alpha=torch.cat(alpha).numpy(),
        band=band,
        eps=eps,
        seconds=time.perf_counter() - t0,
        model_info=ad.describe(),
        sink_logit=torch.cat(sink_logit).numpy() if sink_logit else None,
    )
