"""What sinkscope supports on each tested family: rebuilds docs/architectures.md.

    python scripts/architectures.py > docs/architectures.md

For each family a tiny random model (``sinkscope.models.tiny``) is saved with the GPT-2
tokenizer, and ``sinkscope intervene --preset paper`` runs on it; the table lists the adapter,
the structure it read, how the attention is captured, and which of the paper's interventions
apply (with the reason where one does not). About a minute on 2 CPU cores.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM

from sinkscope.cli import main
from sinkscope.data.tokenizers import offline_gpt2_tokenizer
from sinkscope.models import adapter_for
from sinkscope.models.tiny import FAMILIES, GENERIC_FAMILIES, new_family_config, tiny_config

TEXTS = [
    "The committee met on Tuesday to discuss the budget for next year, and after a long debate it agreed.",
    "Maria has 24 apples. She gives 7 to her brother and buys three bags of 12 more. How many now?",
]


def config(family):
    cfg = tiny_config(family) if family in FAMILIES else new_family_config(family, {})
    cfg.vocab_size = 50257
    return cfg


def route(ad) -> str:
    from sinkscope.models.generic import GenericAdapter, _calls

    if not isinstance(ad, GenericAdapter):
        return "own route" if not ad.attention_interface else "attention interface"
    return (
        "attention interface"
        if _calls(ad.attention_module(0), "ALL_ATTENTION_FUNCTIONS")
        else "SDPA call"
    )


def main_():
    tok = offline_gpt2_tokenizer()
    rows, cells = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "in.jsonl"
        inputs.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS))
        for family in tqdm(FAMILIES + GENERIC_FAMILIES, desc="families", file=sys.stderr):
            torch.manual_seed(0)
            m = AutoModelForCausalLM.from_config(config(family))
            d = Path(tmp) / family
            m.save_pretrained(d)
            tok.save_pretrained(d)
            ad, info = adapter_for(m), adapter_for(m).info()
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                rc = main(
                    [
                        "intervene",
                        "--model",
                        str(d),
                        "--inputs",
                        f"jsonl:{inputs}:text",
                        "--max-tokens",
                        "16",
                        "--preset",
                        "paper",
                        "--out",
                        str(Path(tmp) / f"{family}-out"),
                        "--quiet",
                    ]
                )
            assert rc == 0, family
            s = json.loads((Path(tmp) / f"{family}-out" / "summary.json").read_text())
            cells[family] = {
                i: c | {"reason": (c["reason"] or "").replace(ad.family, "the model")}
                for i, c in s["interventions"].items()
            }
            rows.append(
                f"| {family} | `{type(ad).__name__}` | {info.positional} | {info.norm} | "
                f"{'yes' if info.has_query_bias else 'no'} | {'yes' if info.qk_norm else 'no'} | "
                f"{'yes' if info.parallel else 'no'} | {'yes' if info.sink_logit else 'no'} | {route(ad)} |"
            )
    ids = list(next(iter(cells.values())))
    print("# Architectures: what sinkscope reads and which interventions apply\n")
    print(
        "Regenerate: `python scripts/architectures.py > docs/architectures.md` (tiny random models of each"
    )
    print(
        "family, `sinkscope.models.tiny`; every number they give is checked against HF eager attention in"
    )
    print("`tests/test_families.py`, fp32 within 1e-5 and bf16 within 2e-2).\n")
    print(
        "| family | adapter | positions | norm | b_Q | QK-norm | parallel | sink logit | capture |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n## `intervene --preset paper`: applicable (✓) or why not\n")
    print("| family | " + " | ".join(ids) + " |")
    print("|---|" + "---|" * len(ids))
    reasons: dict[str, int] = {}
    for family, c in cells.items():
        out = []
        for i in ids:
            if c[i]["applicable"]:
                out.append("✓")
            else:
                n = reasons.setdefault(c[i]["reason"], len(reasons) + 1)
                out.append(f"n/a ({n})")
        print(f"| {family} | " + " | ".join(out) + " |")
    print(
        "\nInterventions: "
        + "; ".join(
            f"**{i}** {c}"
            for i, c in ((i, next(iter(cells.values()))[i]["description"]) for i in ids)
        )
    )
    print("\nReasons:\n")
    for r, n in reasons.items():
        print(f"{n}. {r}")
    print("""
## Refused, and why

- **BLOOM, MPT** (and others whose attention module computes its scores by hand): sinkscope
  captures attention where it goes through transformers' attention interface or an SDPA call;
  these do neither, so `measure` says so in one line (exit 2).
- **Mamba, RWKV, xLSTM**: no attention module in their blocks, hence no attention sink to measure.
- **Encoder-only / encoder-decoder** (BERT, T5, ...): not decoder-only causal LMs.
- Unlisted decoders (StableLM, Starcoder2, Granite, ...) get the generic adapter unchanged; a
  fused QKV whose row layout no family declares is not guessed: its weight analyses say so,
  `measure` and the forward-pass analyses still run.""")


if __name__ == "__main__":
    main_()
