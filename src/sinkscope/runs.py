"""Where a run's results go, so that no run silently replaces another's (stdlib only).

Without ``--out`` each run gets its own folder, ``sinkscope-out/<command>/<model>-<hash>/``,
named by the model and a short hash of the settings that decide its numbers, and
``sinkscope-out/<command>/latest`` points at the newest one. The same settings land in the same
folder (a rerun replaces its own result); other settings land beside it. A folder's
``.sinkscope`` marker records the settings of the run that wrote it, and an explicit ``--out``
that holds a different run is refused unless ``--force`` says to replace it
(:func:`sinkscope.io.check_output_dir`).

>>> s = settings_of({"command": "measure", "options": {"model": "default", "seed": 0}})
>>> run_name(["default"], s)
'default-...'
>>> run_name(["EleutherAI/pythia-70m@step1000"], s).startswith("pythia-70m-step1000-")
True
>>> differences(s, settings_of({"command": "measure", "options": {"model": "gpt2", "seed": 0}}))
'model default -> gpt2'
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

# options that change how a result is computed or shown, not what it is: a run with other values
# of these is the same run (batching changes only the last float bits)
PRESENTATION = frozenset(
    {
        "out",
        "out_root",
        "force",
        "progress",
        "quiet",
        "figures",
        "no_figures",
        "format",
        "batch_size",
        "run",
    }
)
ROOT = "sinkscope-out"


def settings_of(settings: Mapping[str, Any]) -> dict:
    """``settings`` as plain JSON values (tuples as lists, paths and other objects as text),
    the form a marker stores and compares."""

    def plain(x: Any) -> Any:
        if isinstance(x, Mapping):
            return {str(k): plain(v) for k, v in x.items() if str(k) not in PRESENTATION}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        return str(x) if isinstance(x, os.PathLike) else type(x).__name__

    return plain(settings)


def settings_hash(settings: Mapping[str, Any]) -> str:
    """8 hex digits of the SHA-256 of ``settings`` (canonical JSON)."""
    text = json.dumps(settings_of(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def model_slug(spec: Any) -> str:
    """A short folder-safe name of a model spec: ``packaged:smollm2`` -> ``smollm2``,
    ``ORG/NAME@REV`` -> ``NAME-REV``, a path -> its file or folder name without suffix."""
    if not isinstance(spec, (str, os.PathLike)):
        return type(spec).__name__.lower()  # a model in memory
    text = os.fspath(spec)
    text = text.split(":", 1)[1] if text.startswith("packaged:") else text
    text = os.path.basename(os.path.normpath(text)) or text
    for suffix in (".gguf", ".safetensors"):
        text = text[: -len(suffix)] if text.endswith(suffix) else text
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return slug[:40] or "model"


def run_name(models: Iterable[Any], settings: Mapping[str, Any]) -> str:
    """``<model>-<hash>`` (several models: their slugs joined by ``+``, cut to 60 characters)."""
    slugs = "+".join(model_slug(m) for m in models)[:60].rstrip("+-.")
    return f"{slugs or 'model'}-{settings_hash(settings)}"


def run_dir(root: str | os.PathLike, models: Iterable[Any], settings: Mapping[str, Any]) -> Path:
    """The default output folder of a run: ``root/<model>-<hash>``."""
    return Path(root) / run_name(models, settings)


def point_latest(out: str | os.PathLike) -> None:
    """Point ``<parent>/latest`` at ``out`` (a relative link, swapped in atomically). A
    ``latest`` that is not a link (a user's file) is left alone; so is a file system without
    links."""
    out = Path(out)
    link = out.parent / "latest"
    if link.exists() and not link.is_symlink():
        return
    tmp = out.parent / f".latest.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(out.name, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)


def differences(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 3) -> str:
    """The settings that differ, as ``name old -> new`` (nested keys flattened, at most
    ``limit`` of them, then a count)."""

    def flat(d: Mapping[str, Any], prefix: str = "") -> dict:
        out: dict = {}
        for k, v in d.items():
            out |= flat(v, f"{prefix}{k}.") if isinstance(v, Mapping) else {prefix + k: v}
        return out

    a, b = flat(settings_of(old)), flat(settings_of(new))
    diff = [k for k in dict.fromkeys([*a, *b]) if a.get(k, "unset") != b.get(k, "unset")]
    leaf = lambda k: k.rsplit(".", 1)[-1]  # noqa: E731  the option's own name
    said = dict.fromkeys(
        f"{leaf(k)} {_show(a.get(k, 'unset'))} -> {_show(b.get(k, 'unset'))}" for k in diff
    )  # a value the stage and the run both hold (--seed) is said once
    diff = list(said)
    text = "; ".join(diff[:limit])
    return text + (f"; {len(diff) - limit} more" if len(diff) > limit else "")


def _show(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(map(str, v)) or "[]"
    return str(v)


def marker_field(path: str | os.PathLike, key: str) -> Any:
    """The JSON value of the ``KEY {json}`` line of ``path``'s marker (``run``: the settings of
    the run, ``files``: the entries it wrote); None without a marker, the line or valid JSON."""
    from .io import MARKER

    try:
        lines = (Path(path) / MARKER).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines[2:]:
        if line.startswith(key + " "):
            try:
                return json.loads(line[len(key) + 1 :])
            except ValueError:
                return None
    return None


def marker_run(path: str | os.PathLike) -> dict | None:
    """The settings recorded in ``path``'s marker (None: no marker, or one written before
    markers recorded them)."""
    run = marker_field(path, "run")
    return run if isinstance(run, dict) else None


def check_same_run(out: Path, kind: str, run: dict | None, force: bool) -> None:
    """Refuse to replace ``out`` when it holds the results of a different run (other settings,
    or settings not recorded) unless ``force``: nothing a run wrote is replaced silently."""
    from .errors import SinkscopeError
    from .io import MARKER

    if run is None or force or not out.is_dir():
        return
    if not any(p.name != MARKER for p in out.iterdir()):
        return  # empty: nothing to lose
    before = marker_run(out)
    if before == settings_of(run):
        return
    now = run.get("command", kind)
    if before is None:
        what = "sinkscope results whose settings were not recorded (an earlier version)"
    elif before.get("command") != now:
        what = f"the results of sinkscope {before.get('command')}, not of {now}"
    else:
        what = (
            f"the results of a sinkscope {now} run with other settings: {differences(before, run)}"
        )
    raise SinkscopeError(
        f"--out {out} holds {what}; pass --force to replace them, or choose another --out "
        "(without --out every run gets its own folder)"
    )
