"""Table 1 workload (10 interventions × 300 inputs × 40 tokens, GPT-2 small shape, random weights):
sinkscope against a naive per-example, per-layer loop in the paper's style, and against ten bare
forward passes over the same tokens (the floor).

The naive loop (below, independent of sinkscope) edits a deep copy of the model by hand (or with
an explicit hook for the activation swaps) and, for every example and every layer, runs the
example through the model with a hook that keeps that layer's attention pattern, then averages
heads and queries in Python. It is run on ``--naive-examples`` inputs and its time scaled to all
inputs (its cost is linear in the number of inputs by construction); the comparison of numbers
uses exactly those inputs. A second naive variant, one eager forward per example with all layers'
patterns, is timed too.

    python benchmarks/table1.py                 # ~10 min on 2 cores
    python benchmarks/table1.py --naive-examples 3 --n 60

Ends with: speedup_vs_naive=<x> ratio_to_bare_forward=<y> max_abs_diff=<z>
"""

from __future__ import annotations

import os
import sys

# benchmarks/profile.py shadows the stdlib `profile` that torch imports: keep this folder off the path
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import copy  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

COORDS = [138, 378, 447]


def naive_edit(hf, rid: str, coords=COORDS, seed: int = 0, random_draw: str = "paper"):
    """A deep copy of ``hf`` with Table 1 edit ``rid`` made by hand; returns (model, embeds_fn, hooks).
    (j) with ``random_draw="paper"``: a generator seeded 42 (the paper's ``random.seed(42)``),
    3 ``randint(0, d - 1)`` per layer in order; ``"sinkscope"``: ``random.Random(seed)``, 3 distinct
    non-massive rows per layer."""
    m = copy.deepcopy(hf)
    m.config._attn_implementation = "eager"
    d = m.config.n_embd
    hooks = []
    embeds_fn = None
    with torch.no_grad():
        if rid == "b":
            for blk in m.transformer.h:
                blk.attn.c_attn.bias[:d] = 0
        elif rid == "c":
            m.transformer.wpe.weight[0] = m.transformer.wpe.weight[1].clone()
        elif rid == "f":

            def embeds_fn(x):
                e = m.transformer.wte(x).clone()
                e[:, 0] = 0
                return e
        elif rid == "g":
            for blk in m.transformer.h:
                blk.mlp.c_proj.weight.zero_()
                blk.mlp.c_proj.bias.zero_()
        elif rid == "h":
            m.transformer.wpe.weight.zero_()
        elif rid == "i":
            for blk in m.transformer.h:
                blk.attn.c_attn.weight[coords, d : 2 * d] = 0
        elif rid == "j" and random_draw == "paper":
            rng = random.Random(42)
            for blk in m.transformer.h:
                blk.attn.c_attn.weight[[rng.randint(0, d - 1) for _ in range(3)], d : 2 * d] = 0
        elif rid == "j":
            rng = random.Random(seed)
            pool = [x for x in range(d) if x not in coords]
            for blk in m.transformer.h:
                blk.attn.c_attn.weight[sorted(rng.sample(pool, 3)), d : 2 * d] = 0
        elif rid in ("d", "e"):
            P = m.transformer.wpe.weight[:2].clone()
            V = P + m.transformer.h[0].mlp(P) if rid == "d" else P
            u0, u1 = V[0] / V[0].norm(), V[1] / V[1].norm()

            def swap(mod, inp, out):
                out = out.clone()
                for b in range(out.shape[0]):
                    a = float(out[b, 0] @ u0)
                    out[b, 0] = out[b, 0] - a * u0 + a * u1
                    out[b, 1] = out[b, 1] + a * u0 - a * u1
                return out

            hooks.append(m.transformer.h[0].mlp.register_forward_hook(swap))
    return m, embeds_fn, hooks


def naive_example(m, embeds_fn, x, band, per_layer_forward: bool = True):
    """(BOS attention over ``band``, over all layers, attention to index 1 over ``band``, CE) of one example."""
    L, H, T = m.config.n_layer, m.config.n_head, x.shape[1]
    kwargs = {"inputs_embeds": embeds_fn(x)} if embeds_fn else {"input_ids": x}
    bos, to1 = [], []
    with torch.no_grad():
        if per_layer_forward:
            for l in range(L):  # one forward per layer, keeping only that layer's pattern
                out = m(**kwargs, output_attentions=True)
                att = out.attentions[l][0]
                bos.append(sum(float(att[h, T // 2 :, 0].mean()) for h in range(H)) / H)
                to1.append(sum(float(att[h, T // 2 :, 1].mean()) for h in range(H)) / H)
        else:
            out = m(**kwargs, output_attentions=True)
            for l in range(L):
                att = out.attentions[l][0]
                bos.append(sum(float(att[h, T // 2 :, 0].mean()) for h in range(H)) / H)
                to1.append(sum(float(att[h, T // 2 :, 1].mean()) for h in range(H)) / H)
        ce = float(F.cross_entropy(out.logits[0, :-1], x[0, 1:]))
    lo, hi = band
    return sum(bos[lo:hi]) / (hi - lo), sum(bos) / L, sum(to1[lo:hi]) / (hi - lo), ce


def naive_table1(
    hf,
    ids,
    band,
    ids_order="abcdefghij",
    per_layer_forward=True,
    coords=COORDS,
    seed=0,
    random_draw="paper",
):
    """``{rid: [(bos_mid, bos_all, to1_mid, ce) per example]}``. The paper's (j) reseeds before
    each example, as its code does: one edited copy per example."""
    out = {}
    for rid in ids_order:
        per_example = rid == "j" and random_draw == "paper"
        m, embeds_fn, hooks = naive_edit(hf, rid, coords, seed, random_draw)
        out[rid] = []
        for e in range(ids.shape[0]):
            if per_example and e:
                m, embeds_fn, hooks = naive_edit(hf, rid, coords, seed, random_draw)
            out[rid].append(naive_example(m, embeds_fn, ids[e : e + 1], band, per_layer_forward))
        for h in hooks:
            h.remove()
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=300, help="inputs (default 300 = the paper's)")
    p.add_argument("--T", type=int, default=40)
    p.add_argument("--naive-examples", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=50)
    args = p.parse_args()

    from transformers import GPT2Config, GPT2LMHeadModel

    from sinkscope.data import Example, TokenizedInputs
    from sinkscope.interventions import PAPER_LABELS, paper_presets
    from sinkscope.interventions.run import run_interventions
    from sinkscope.models import SinkModel, adapter_for

    torch.manual_seed(0)
    hf = GPT2LMHeadModel._from_config(GPT2Config(), attn_implementation="sdpa").eval()
    sm = SinkModel("random GPT-2 small", hf, adapter_for(hf))
    ids = torch.randint(0, 50257, (args.n, args.T), generator=torch.Generator().manual_seed(1))
    doms = ["sst2", "gsm8k", "humaneval"]
    ti = TokenizedInputs(ids, [Example("", doms[i * 3 // args.n]) for i in range(args.n)], {})
    band = (3, 11)
    print(
        f"Table 1 workload: 10 interventions x {args.n} inputs x {args.T} tokens, GPT-2 small shape, {torch.get_num_threads()} threads"
    )

    t = time.perf_counter()
    res = run_interventions(
        sm,
        ti,
        paper_presets(0),
        coords=COORDS,
        band=band,
        batch_size=args.batch_size,
        labels=PAPER_LABELS,
        progress=False,
    )
    t_sink = time.perf_counter() - t
    na = [r.id for r in res.runs if not r.applicable]
    assert not na, na

    t = time.perf_counter()
    with torch.inference_mode():
        for _ in range(10):
            for s in range(0, args.n, args.batch_size):
                hf(input_ids=ids[s : s + args.batch_size], use_cache=False)
    t_bare = time.perf_counter() - t

    sub = torch.cat(
        [
            ids[i * args.n // args.naive_examples : i * args.n // args.naive_examples + 1]
            for i in range(args.naive_examples)
        ]
    )
    rows = [i * args.n // args.naive_examples for i in range(args.naive_examples)]
    t = time.perf_counter()
    naive = naive_table1(hf, sub, band, per_layer_forward=True)
    t_naive = (time.perf_counter() - t) * args.n / args.naive_examples
    t = time.perf_counter()
    naive_table1(hf, sub, band, per_layer_forward=False)
    t_naive1 = (time.perf_counter() - t) * args.n / args.naive_examples

    diff = 0.0
    for rid, vals in naive.items():
        ours = list(
            zip(
                res.per_example(rid, "mid")[rows],
                res.per_example(rid, "all")[rows],
                res.per_example(rid, "mid", key=1)[rows],
                res.run(rid).ce[rows],
            )
        )
        diff = max(diff, max(abs(a - b) for o, v in zip(ours, vals) for a, b in zip(o, v)))

    print(f"  sinkscope (batched, one pass per intervention) {t_sink:8.1f} s")
    print(f"  ten bare forward passes (sdpa, same batches)   {t_bare:8.1f} s")
    print(
        f"  naive, per example and per layer (scaled from {args.naive_examples} inputs) {t_naive:8.1f} s"
    )
    print(
        f"  naive, one eager forward per example (scaled)  {t_naive1:8.1f} s  -> speedup {t_naive1 / t_sink:.1f}x"
    )
    print(
        f"  max |difference| of per-example BOS (band, all layers), attention to 1 and CE on the {args.naive_examples} compared inputs: {diff:.2e}"
    )
    print(
        f"speedup_vs_naive={t_naive / t_sink:.1f} ratio_to_bare_forward={t_sink / t_bare:.3f} max_abs_diff={diff:.2e}"
    )


if __name__ == "__main__":
    main()
