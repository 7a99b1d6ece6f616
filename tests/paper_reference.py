"""The paper's procedure re-implemented from its description (``shared/docs/paper-notes.md`` and
the reading of the paper's published code in issue 13), one example at a time, with plain tensor
operations on the raw GPT-2 parameters (float64). Nothing here calls sinkscope: the tests in
``test_paper_exact.py`` compare sinkscope's outputs with these functions.

What the paper's code does, as restated in the issue and the notes:

- every intervention runs each example through a hand-written GPT-2 forward pass (LN1, causal
  attention, residual, LN2, MLP, residual), with no token prepended;
- BOS attention: the mean attention of the second-half queries to index 0 over heads, then over
  layers 3..10 (0-based; "mid") or all layers ("all"), then over examples;
- (i) zeroes, in every layer, the W_K input rows of the 3 largest |EPE_0| coordinates;
- (j) seeds Python's ``random`` with 42 before each example and draws ``randint(0, d - 1)``
  three times per layer, layer after layer (repeats and massive coordinates allowed);
- Δ_j = b_Q,h · (W_K,h x_j) with x the LN1 output, re-centred per (example, layer, head) to a
  minimum of 0; its std per layer × position is ``np.std`` (population);
- EPE validation cos(EPE_i, R_i − O_i): MLP only (R = x + MLP⁰(x), O = e + MLP⁰(e)) or the full
  first block; the "global median" is over every example and position, index 0 included;
- the γ analysis calls coordinates massive when |EPE_0[d]| > mean + 3·std (torch's default std,
  the sample std) and takes the 2 largest |EPE_0| when none passes.
"""

from __future__ import annotations

import math
import random
import statistics

import torch
import torch.nn.functional as F

BAND = (3, 11)  # the paper's layers 4..11 (1-based), 0-based [3, 11)


def _gelu(x: torch.Tensor) -> torch.Tensor:  # GPT-2's "gelu_new"
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


class PaperGPT2:
    """The raw parameters of a HF ``GPT2LMHeadModel`` and the paper's manual forward pass."""

    def __init__(self, hf):
        cfg = hf.config
        self.L, self.H, self.d, self.eps = (
            cfg.n_layer,
            cfg.n_head,
            cfg.n_embd,
            cfg.layer_norm_epsilon,
        )
        self.dh = self.d // self.H
        sd = {k: v.detach().double().clone() for k, v in hf.state_dict().items()}
        self.wte, self.wpe = sd["transformer.wte.weight"], sd["transformer.wpe.weight"]
        self.blocks = [
            {
                k[len(f"transformer.h.{l}.") :]: v
                for k, v in sd.items()
                if k.startswith(f"transformer.h.{l}.")
            }
            for l in range(self.L)
        ]

    def ln(self, l: int, which: str, x):
        b = self.blocks[l]
        return F.layer_norm(x, (self.d,), b[f"{which}.weight"], b[f"{which}.bias"], self.eps)

    def mlp(self, l: int, x):
        b = self.blocks[l]
        return (
            _gelu(x @ b["mlp.c_fc.weight"] + b["mlp.c_fc.bias"]) @ b["mlp.c_proj.weight"]
            + b["mlp.c_proj.bias"]
        )

    def attn(self, l: int, h, *, zero_bq=False, wk_rows=(), causal=True):
        """``h [T, d]`` (LN1 output) -> (attention output [T, d], probabilities [H, T, T])."""
        b, d, H, dh = self.blocks[l], self.d, self.H, self.dh
        W, bias = b["attn.c_attn.weight"], b["attn.c_attn.bias"]  # Conv1D: [in, 3d]
        Wq, Wk, Wv = W[:, :d], W[:, d : 2 * d].clone(), W[:, 2 * d :]
        bq, bk, bv = bias[:d] * (0.0 if zero_bq else 1.0), bias[d : 2 * d], bias[2 * d :]
        for r in wk_rows:  # zero the W_K input row of residual coordinate r
            Wk[r] = 0.0
        T = h.shape[0]
        q, k, v = (
            (h @ M + c).view(T, H, dh).transpose(0, 1) for M, c in ((Wq, bq), (Wk, bk), (Wv, bv))
        )
        s = q @ k.transpose(1, 2) / math.sqrt(dh)
        if causal:
            s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        p = torch.softmax(s, -1)
        out = (p @ v).transpose(0, 1).reshape(T, d)
        return out @ b["attn.c_proj.weight"] + b["attn.c_proj.bias"], p

    def forward(self, x, *, zero_bq=False, wk_rows=None, skip_mlp=False, mlp0_edit=None):
        """The paper's layer loop from the layer-0 input ``x [T, d]``; returns (per-layer
        probabilities [H, T, T], per-layer LN1 outputs [T, d])."""
        probs, ln1s = [], []
        for l in range(self.L):
            h = self.ln(l, "ln_1", x)
            ln1s.append(h)
            a, p = self.attn(l, h, zero_bq=zero_bq, wk_rows=wk_rows[l] if wk_rows else ())
            probs.append(p)
            x = x + a
            if skip_mlp:
                continue
            m = self.mlp(l, self.ln(l, "ln_2", x))
            if l == 0 and mlp0_edit is not None:
                m = mlp0_edit(m)
            x = x + m
        return probs, ln1s

    def epe(self, pos):
        """EPE = p + MLP⁰(p), no LayerNorm."""
        return pos + self.mlp(0, pos)

    def top3(self, vec) -> list[int]:
        """The 3 coordinates of largest |vec| (plain Python sort)."""
        vals = [abs(float(x)) for x in vec]
        return sorted(sorted(range(len(vals)), key=lambda i: -vals[i])[:3])


def bos(probs, band=BAND):
    """(mid, all): BOS attention of the second-half queries, heads then layers averaged."""
    T = probs[0].shape[-1]
    per_layer = [float(p[:, T // 2 :, 0].mean()) for p in probs]
    lo, hi = band[0], min(band[1], len(per_layer))
    return sum(per_layer[lo:hi]) / (hi - lo), sum(per_layer) / len(per_layer)


def paper_random_rows(n_layers: int, d: int) -> list[list[int]]:
    """(j): ``random.seed(42)`` then ``randint(0, d - 1)`` three times per layer."""
    random.seed(42)
    return [[random.randint(0, d - 1) for _ in range(3)] for _ in range(n_layers)]


def _swap(u0, u1):
    def edit(m):
        m = m.clone()
        a = float(m[0] @ u0)
        m[0] = m[0] - a * u0 + a * u1
        m[1] = m[1] + a * u0 - a * u1
        return m

    return edit


def paper_table1(model: PaperGPT2, ids_list, coords_i=None) -> dict[str, list[tuple[float, float]]]:
    """``{intervention: [(mid, all) per example]}`` for (a)..(j), each example alone.
    ``coords_i``: the coordinates (i) zeroes (default: the paper's top-3 |EPE_0|)."""
    out: dict[str, list] = {r: [] for r in "abcdefghij"}
    state = random.getstate()
    try:
        for ids in ids_list:
            T = len(ids)
            tok, pos = model.wte[list(ids)], model.wpe[:T]
            epe = model.epe(pos)
            unit = lambda v: v / v.norm()  # noqa: E731
            pc = pos.clone()
            pc[0] = pos[1]
            tf = tok.clone()
            tf[0] = 0.0
            rows_i = coords_i if coords_i is not None else model.top3(epe[0])
            runs = {
                "a": dict(x=tok + pos),
                "b": dict(x=tok + pos, zero_bq=True),
                "c": dict(x=tok + pc),
                "d": dict(x=tok + pos, mlp0_edit=_swap(unit(epe[0]), unit(epe[1]))),
                "e": dict(x=tok + pos, mlp0_edit=_swap(unit(pos[0]), unit(pos[1]))),
                "f": dict(x=tf + pos),
                "g": dict(x=tok + pos, skip_mlp=True),
                "h": dict(x=tok),
                "i": dict(x=tok + pos, wk_rows=[rows_i] * model.L),
                "j": dict(
                    x=tok + pos, wk_rows=paper_random_rows(model.L, model.d)
                ),  # reseeded for every example
            }
            for rid, kw in runs.items():
                x = kw.pop("x")
                out[rid].append(bos(model.forward(x, **kw)[0]))
    finally:
        random.setstate(state)
    return out


def block0(model: PaperGPT2, x, *, causal: bool = True):
    """The first block: LN1, attention, residual, LN2, MLP, residual."""
    a, _ = model.attn(0, model.ln(0, "ln_1", x), causal=causal)
    y = x + a
    return y + model.mlp(0, model.ln(0, "ln_2", y))


def epe_validation(
    model: PaperGPT2, ids, *, full_block: bool = False, causal: bool = True
) -> list[float]:
    """cos(EPE_i, R_i − O_i) for every position of one example."""
    T = len(ids)
    e, p = model.wte[list(ids)], model.wpe[:T]
    x = e + p
    if full_block:
        R, O = block0(model, x, causal=causal), block0(model, e, causal=causal)
    else:
        R, O = x + model.mlp(0, x), e + model.mlp(0, e)
    epe = model.epe(p)
    return [float(F.cosine_similarity(R[i] - O[i], epe[i], dim=0)) for i in range(T)]


def validation_medians(cos: list[list[float]]) -> dict[str, float]:
    """The numbers of the paper's Fig 3 summary: median at index 0, the lowest per-position
    median elsewhere, the global median over every example and position (index 0 included), and
    the median over positions >= 1."""
    T = len(cos[0])
    per_pos = [statistics.median(c[j] for c in cos) for j in range(T)]
    return {
        "validation_median_index0": per_pos[0],
        "validation_min_median_other": min(per_pos[1:]),
        "validation_global_median": statistics.median(v for c in cos for v in c),
        "validation_global_median_other": statistics.median(v for c in cos for v in c[1:]),
    }


def delta_std(model: PaperGPT2, ids_list) -> dict[tuple[int, int], float]:
    """``{(layer, position): population std of re-centred Δ over examples × heads}``."""
    vals: dict[tuple[int, int], list[float]] = {}
    for ids in ids_list:
        T = len(ids)
        _, ln1s = model.forward(model.wte[list(ids)] + model.wpe[:T])
        for l, h in enumerate(ln1s):
            b, d = model.blocks[l], model.d
            k = h @ b["attn.c_attn.weight"][:, d : 2 * d]  # [T, d], no b_K
            bq = b["attn.c_attn.bias"][:d]
            for head in range(model.H):
                sl = slice(head * model.dh, (head + 1) * model.dh)
                delta = [float(k[j, sl] @ bq[sl]) for j in range(T)]
                lo = min(delta)
                for j in range(T):
                    vals.setdefault((l, j), []).append(delta[j] - lo)
    return {key: statistics.pstdev(v) for key, v in vals.items()}


def gamma_coords(epe0: list[float], k_sigma: float = 3.0) -> list[int]:
    """The paper's γ code: |EPE_0[d]| > mean + k·(sample std), else the 2 largest |EPE_0|."""
    a = [abs(x) for x in epe0]
    thr = statistics.fmean(a) + k_sigma * statistics.stdev(a)
    found = [i for i, x in enumerate(a) if x > thr]
    return found or sorted(sorted(range(len(a)), key=lambda i: -a[i])[:2])
