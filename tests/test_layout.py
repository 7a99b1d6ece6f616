"""The layout holds (docs/contributing.md): each module imports only from its own layer or lower
ones, no import cycle at import time, no module over 400 lines, no function over 80, and the
CLI's help builds without torch. Read from the source with ``ast``, not from a running import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sinkscope"
LAYERS = {  # top-level part of the module name -> layer; a module imports from <= its layer
    "errors": 0, "registry": 0, "parsing": 0, "io": 0, "signals": 0, "_lazy": 0,
    "metrics": 1, "models": 2, "data": 3, "training": 4, "analysis": 4, "interventions": 4,
    "report": 5, "stages": 6, "studies": 7, "cli": 8, "api": 8, "__main__": 9,
}  # fmt: skip


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        rel = p.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(rel[:-1] if rel[-1] == "__init__" else rel)
        out[name] = p
    return out


def _imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """``(imported module, at import time)`` for every sinkscope import of the module."""
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []

    def visit(node, top: bool):
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, ast.If) and getattr(ch.test, "id", "") == "TYPE_CHECKING":
                continue  # annotations only
            if isinstance(ch, ast.ImportFrom):
                if ch.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - ch.level + 1]
                    mod = ".".join(base + ([ch.module] if ch.module else []))
                else:
                    mod = ch.module or ""
                if mod.startswith("sinkscope"):
                    subs = [f"{mod}.{a.name}" for a in ch.names] if not ch.module else []
                    found.extend((m, top) for m in ([mod] + subs))
            elif isinstance(ch, ast.Import):
                found.extend((a.name, top) for a in ch.names if a.name.startswith("sinkscope"))
            visit(ch, top and not isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(path.read_text()), True)
    return found


def _layer(mod: str) -> int:
    parts = mod.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def test_no_module_imports_a_higher_layer():
    up = [
        f"{name} -> {mod}"
        for name, path in _modules().items()
        for mod, _ in _imports(name, path)
        if _layer(mod) > _layer(name)
    ]
    assert not up, "imports from a higher layer:\n" + "\n".join(sorted(set(up)))


def test_no_import_cycle_at_import_time():
    mods = _modules()

    def resolve(m: str) -> str:
        while m not in mods and "." in m:
            m = m.rsplit(".", 1)[0]
        return m

    graph = {n: {resolve(m) for m, top in _imports(n, p) if top} - {n} for n, p in mods.items()}
    # a package's __init__ importing its own submodules is how packages work: not a cycle
    cycles, state = [], {}

    def dfs(u, path):
        state[u] = 1
        for v in graph.get(u, ()):
            if u.startswith(v + ".") and v in mods:  # submodule -> its package (already running)
                continue
            if state.get(v) == 1:
                cycles.append(path[path.index(v) :] + [v])
            elif v not in state:
                dfs(v, path + [v])
        state[u] = 2

    for n in mods:
        if n not in state:
            dfs(n, [n])
    assert not cycles, cycles


def test_module_and_function_sizes():
    big = []
    for p in SRC.rglob("*.py"):
        rel, n = str(p.relative_to(SRC)), len(p.read_text().splitlines())
        if n > 400:
            big.append(f"{rel}: {n} lines")
    assert not big, big
    long = []
    for p in SRC.rglob("*.py"):
        for f in ast.walk(ast.parse(p.read_text())):
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = f.end_lineno - f.lineno + 1
                if n > 80:
                    long.append(f"{p.relative_to(SRC)}:{f.name} {n} lines")
    assert not long, long


def test_help_imports_no_torch_and_lists_every_registered_stage():
    code = (
        "import sys; from sinkscope.cli import build_parser; from sinkscope.registry import "
        "stages; h = build_parser().format_help(); "
        "assert all(n in h for n in stages()), h; "
        "sys.exit(bool({'torch', 'transformers', 'pandas'} & set(sys.modules)))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_public_functions_are_annotated():
    """Every public function and public method has a type on each parameter and its return."""
    missing = []
    for p in SRC.rglob("*.py"):
        for n in ast.parse(p.read_text()).body:
            public_class = isinstance(n, ast.ClassDef) and not n.name.startswith("_")
            fs = [n] + (
                [m for m in n.body if isinstance(m, ast.FunctionDef)] if public_class else []
            )
            for f in fs:
                if not isinstance(f, ast.FunctionDef) or f.name.startswith("_"):
                    continue
                a = f.args
                extra = [x for x in (a.vararg, a.kwarg) if x is not None]
                params = [x for x in a.posonlyargs + a.args + a.kwonlyargs + extra
                          if x.arg not in ("self", "cls")]  # fmt: skip
                if f.returns is None or any(x.annotation is None for x in params):
                    missing.append(f"{p.relative_to(SRC)}:{f.lineno} {f.name}")
    assert not missing, missing
