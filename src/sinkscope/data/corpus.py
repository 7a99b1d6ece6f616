"""The offline default corpus: natural language, math and code generated on any machine from
the Python standard library and a seeded problem generator, so no third-party text is shipped.

* ``nl``   - prose paragraphs of the language reference (``pydoc_data.topics``);
* ``code`` - function and method definitions from a fixed list of pure-Python stdlib modules;
* ``math`` - arithmetic word problems and algebra exercises from ``random.Random(seed)``.

The same seed on the same Python minor version gives the same texts (the stdlib prose and
source are what that version ships); the run's ``summary.json`` records a hash of the inputs.

>>> a = default_corpus(seed=1, per_domain=3); b = default_corpus(seed=1, per_domain=3)
>>> [e.text for e in a] == [e.text for e in b], sorted({e.domain for e in a})
(True, ['code', 'math', 'nl'])
"""

from __future__ import annotations

import ast
import random
import sysconfig
import textwrap
from functools import lru_cache
from pathlib import Path

from .inputs import Example

MIN_CHARS = 250  # comfortably above 40 tokens for any subword tokenizer
MAX_CHARS = 1500
CODE_MODULES = (
    "argparse",
    "base64",
    "bisect",
    "calendar",
    "colorsys",
    "configparser",
    "copy",
    "csv",
    "dataclasses",
    "difflib",
    "enum",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "getopt",
    "gettext",
    "glob",
    "gzip",
    "heapq",
    "hmac",
    "imaplib",
    "inspect",
    "ipaddress",
    "locale",
    "mailbox",
    "mimetypes",
    "netrc",
    "ntpath",
    "numbers",
    "optparse",
    "pathlib",
    "pickle",
    "pkgutil",
    "platform",
    "plistlib",
    "poplib",
    "posixpath",
    "pprint",
    "quopri",
    "random",
    "shlex",
    "shutil",
    "smtplib",
    "socket",
    "statistics",
    "string",
    "subprocess",
    "tabnanny",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "trace",
    "traceback",
    "types",
    "typing",
    "uuid",
    "warnings",
    "wave",
    "weakref",
    "zipfile",
)


@lru_cache(maxsize=1)
def nl_texts() -> tuple[str, ...]:
    """Prose paragraphs (no indented code) from the language reference shipped with Python."""
    from pydoc_data.topics import topics

    out = []
    for name in sorted(topics):
        for para in topics[name].split("\n\n"):
            lines = [ln for ln in para.split("\n") if ln.strip()]
            if not lines or any(ln.startswith((" ", "\t")) for ln in lines):
                continue
            text = " ".join(ln.strip() for ln in lines)
            if len(text) >= MIN_CHARS and sum(c.isalpha() for c in text) / len(text) > 0.7:
                out.append(text[:MAX_CHARS])
    return tuple(out)


@lru_cache(maxsize=1)
def code_texts() -> tuple[str, ...]:
    """Function / method definitions (source as written) from :data:`CODE_MODULES`."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for mod in CODE_MODULES:
        path = stdlib / f"{mod}.py"
        if not path.exists():
            continue
        src = path.read_text(encoding="utf-8", errors="replace")
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        lines = src.splitlines(keepends=True)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
                seg = textwrap.dedent("".join(lines[start : node.end_lineno]))
                if len(seg) >= MIN_CHARS:
                    out.append(seg[:MAX_CHARS])
    return tuple(out)


_NAMES = [
    "Ava",
    "Ben",
    "Chloe",
    "Dev",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jamal",
    "Kira",
    "Liam",
    "Mei",
    "Noah",
    "Olu",
    "Priya",
]
_ITEMS = [
    ("apples", "basket"),
    ("marbles", "jar"),
    ("stickers", "album"),
    ("cookies", "tray"),
    ("pencils", "box"),
    ("coins", "purse"),
    ("books", "shelf"),
    ("eggs", "carton"),
]


def _word_problem(r: random.Random) -> str:
    a, b = r.sample(_NAMES, 2)
    item, holder = r.choice(_ITEMS)
    n0, k, m, price = r.randint(12, 90), r.randint(2, 9), r.randint(3, 30), r.randint(2, 15)
    days = r.randint(2, 7)
    return (
        f"{a} has {n0} {item} in a {holder}. Every day for {days} days, {a} buys {k} more {item} and gives "
        f"{m // 3 + 1} of them to {b}. At the end, {b} sells half of the {item} {b} received for ${price} each "
        f"and spends one third of the money on lunch. How many {item} does {a} have left, and how many dollars "
        f"does {b} have after lunch? Explain each step of the calculation."
    )


def _algebra(r: random.Random) -> str:
    a, b, c = r.randint(2, 12), r.randint(1, 40), r.randint(2, 9)
    x = r.randint(-15, 25)
    rhs = a * x + b
    p, q = r.randint(1, 9), r.randint(1, 9)
    return (
        f"Solve for x: {a}x + {b} = {rhs}. Then let y = {c}x - {p} and compute y squared minus {q}y. "
        f"Next, factor the polynomial x^2 + {p + q}x + {p * q} and find both of its roots. Finally, check whether "
        f"the point (x, y) you found lies on the line y = {c}x - {p}, and write the slope and the intercept of "
        f"the line through (0, {b}) and ({a}, {rhs})."
    )


def _arithmetic(r: random.Random) -> str:
    nums = [r.randint(10, 999) for _ in range(6)]
    frac = (r.randint(1, 8), r.randint(9, 16))
    return (
        f"Compute {nums[0]} + {nums[1]} * {nums[2]} - {nums[3]}. What is {frac[0]}/{frac[1]} of {nums[4] * frac[1]}? "
        f"A rectangle has sides of {nums[0] % 50 + 3} cm and {nums[5] % 40 + 2} cm; find its area and its perimeter. "
        f"If a train travels {nums[4]} km in {r.randint(2, 9)} hours, what is its average speed, and how far "
        f"does it go in {r.randint(2, 12)} hours at that speed? Round every answer to two decimal places."
    )


def math_texts(seed: int, n: int) -> list[str]:
    """``n`` math problems, each a word problem, an algebra exercise or an arithmetic drill."""
    r = random.Random(f"sinkscope-math-{seed}")
    makers = (_word_problem, _algebra, _arithmetic)
    return [makers[i % 3](r) for i in range(n)]


def default_corpus(seed: int = 0, per_domain: int = 100, oversample: int = 2) -> list[Example]:
    """Up to ``oversample * per_domain`` candidates per domain (nl, math, code), shuffled by ``seed``.

    Tokenisation later keeps the first ``per_domain`` per domain that are long enough.
    """
    rng = random.Random(seed)
    out: list[Example] = []
    nl, code = list(nl_texts()), list(code_texts())
    # the generator could make any number of problems: no more than the other domains hold (a
    # --per-domain beyond what the corpus has keeps what there is, and the run says how many)
    n_math = min(per_domain * oversample, max(len(nl), len(code), 1000))
    for domain, texts in (("nl", nl), ("math", math_texts(seed, n_math)), ("code", code)):
        texts = list(dict.fromkeys(texts))  # drop duplicates, keep order
        rng.shuffle(texts)
        out += [
            Example(text=t, domain=domain, source=f"default:{domain}")
            for t in texts[: per_domain * oversample]
        ]
    return out
