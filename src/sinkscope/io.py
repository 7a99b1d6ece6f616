"""Atomic output: a result directory or file appears complete or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import SinkscopeError
from .signals import _signals_deferred, interrupt_guard, signal_handlers  # noqa: F401

MARKER = ".sinkscope"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a temp-created file/dir the permissions a normal ``open``/``mkdir`` would have."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


TMP_MARKER = ".sinkscope-tmp"  # inside a temp directory sinkscope is still writing
KINDS = {  # what a marked directory is; a command only replaces or clears its own kind
    "result": "a sinkscope output (measure, explain, intervene, compare, mitigate)",
    "reproduce": "a sinkscope output of reproduce",
    "train": "a sinkscope training run",
    "zoo": "a sinkscope zoo",
    "sweep": "a sinkscope sweep",
}


def out_path(out: str | os.PathLike) -> Path:
    """``--out`` as the directory it really names: ``~`` expanded, symbolic links and ``..``
    resolved (``a/missing/..`` is ``a``, a link is its target), so checks and renames act on it."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(out))))


def marker_kind(path: str | os.PathLike) -> str | None:
    """The kind in ``path``'s ``.sinkscope`` marker (None: no marker). Markers written before
    kinds existed are read by their wording."""
    try:
        text = (Path(path) / MARKER).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    first = text.splitlines()[0].strip() if text.strip() else ""
    if first.startswith("sinkscope:") and first[10:] in KINDS:
        return first[10:]
    return (
        "reproduce"
        if "reproduce" in text
        else "train"
        if "training run" in text
        else "zoo"
        if "zoo" in text
        else "result"
    )


def owned(path: str | os.PathLike, kind: str, legacy: Callable[[Path], bool] | None = None) -> bool:
    """True for a directory sinkscope may clear or replace for ``kind``: empty, or marked with
    that kind. A directory of another kind (a training run under ``measure --out``) is not.
    ``legacy(path)`` recognises an unmarked directory an earlier sinkscope made (it is then
    marked)."""
    path = Path(path)
    if not path.is_dir():
        return False
    found = marker_kind(path)
    if found == kind or not any(path.iterdir()):
        return True
    if found is None and legacy is not None and legacy(path):
        mark(path, kind)
        return True
    return False


def check_owned(
    out: str | os.PathLike, kind: str, legacy: Callable[[Path], bool] | None = None
) -> Path:
    """``out`` resolved (:func:`out_path`), refused if it is a file, someone else's directory or
    a sinkscope directory of another kind: the ownership rule of every command."""
    out = out_path(out)
    if out.exists() and not out.is_dir():
        raise SinkscopeError(f"--out {out} is an existing file; pass a directory path")
    if out.exists() and not owned(out, kind, legacy):
        found = marker_kind(out)
        if found is None:
            raise SinkscopeError(
                f"--out {out} exists and is not {KINDS[kind]}; choose a new or empty directory"
            )
        raise SinkscopeError(
            f"--out {out} is {KINDS[found]}, not {KINDS[kind]}; choose another --out"
        )
    return out


def claim_dir(out: Path, kind: str, run: dict | None = None) -> None:
    """Create (or keep) the directory ``out``, already checked by :func:`check_owned`, for a
    command that works inside it (reproduce, train, zoo), and mark it with ``kind`` (and the
    ``run`` that now fills it)."""
    check_writable(out)
    out.mkdir(parents=True, exist_ok=True)
    mark(out, kind, run)


def mark(path: str | os.PathLike, kind: str, run: dict | None = None) -> None:
    """Put the ``.sinkscope`` marker of ``kind`` into a directory sinkscope created; ``run``
    (the settings of the run that fills it, :mod:`sinkscope.runs`) replaces the one recorded.
    The marker's lines: ``sinkscope:KIND``, what it is, then ``run {settings}`` and ``files
    [names]`` (:func:`record_files`) where recorded."""
    from .runs import settings_of

    if run is None and (Path(path) / MARKER).exists():
        return
    text = f"sinkscope:{kind}\n{KINDS[kind]}; sinkscope may replace it\n"
    if run is not None:
        text += "run " + json.dumps(settings_of(run), sort_keys=True) + "\n"
    names = marker_files(path)
    text += "" if names is None else "files " + json.dumps(names) + "\n"
    write_text_atomic(Path(path) / MARKER, text)


def marker_files(path: str | os.PathLike) -> list[str] | None:
    """The names (top-level entries) the marker of ``path`` lists as written by sinkscope
    (:func:`record_files`); None: no marker, or one that lists none (an earlier version)."""
    from .runs import marker_field

    names = marker_field(path, "files")
    ok = isinstance(names, list) and all(isinstance(n, str) for n in names)
    return names if ok else None


def record_files(path: str | os.PathLike, names: list[str]) -> None:
    """Add ``names`` (entries sinkscope is about to write at the top of the marked directory
    ``path``) to its marker, so that clearing it later removes those and nothing else. Call it
    before writing them; a directory without a marker (a temp one) is left alone."""
    marker, have = Path(path) / MARKER, marker_files(path)
    if not marker.exists() or (have is not None and set(names) <= set(have)):
        return
    text = marker.read_text(encoding="utf-8", errors="replace").splitlines()
    names = list(dict.fromkeys([*(have or []), *names]))
    lines = [ln for ln in text if not ln.startswith("files ")] + ["files " + json.dumps(names)]
    write_text_atomic(marker, "\n".join(lines) + "\n")


def check_writable(out: str | os.PathLike, flag: str = "--out") -> None:
    """Fail early if nothing can be created at ``out``: probe the nearest existing ancestor by
    making (and removing) a directory there, which also catches read-only file systems."""
    out = out_path(out)
    # results are swapped in from a temp directory beside ``out``, so its parent must take new
    # entries; an existing ``out`` (reproduce, train, zoo write into it) must too
    nearest = next(p for p in out.parents if p.exists())
    for d in ([out] if out.is_dir() else []) + [nearest]:
        if not d.is_dir():
            raise SinkscopeError(
                f"{flag} {out}: {d} is a file, not a directory; choose another path"
            )
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".sinkscope-probe-", dir=d))
        except OSError as e:
            raise SinkscopeError(
                f"{flag} {out} cannot be written ({e.strerror}: {d}); choose a writable directory"
            ) from None


def check_output_dir(
    out: str | os.PathLike,
    *,
    kind: str = "result",
    overwrite: bool = True,
    busy: bool = True,
    run: dict | None = None,
    force: bool = False,
) -> Path:
    """Fail early (before any work) if ``out`` cannot be (re)placed by a sinkscope ``kind``
    directory: not a file, not someone else's directory, not a directory of another kind, not the
    result of a different ``run`` (unless ``force``), not in use by a live run, writable.
    Returns the resolved path (:func:`out_path`)."""
    from .runs import check_same_run

    out = check_owned(out, kind)
    if out.exists() and not overwrite:
        raise SinkscopeError(f"--out {out} already exists; remove it or pass --force")
    if (
        busy
    ):  # a live reproduce / train / zoo holds its directory; a result cannot go into or onto it
        for d in [out] if out.is_dir() else []:
            with _flock(d, blocking=False) as free:
                if not free:
                    raise SinkscopeError(
                        f"--out {out} is in use by a running sinkscope command; wait for it to finish or choose another --out"
                    )
        if out.parent.is_dir():
            with _flock(out.parent, timeout=1.0) as free:
                if not free:
                    raise SinkscopeError(
                        f"--out {out}: {out.parent} is in use by a running sinkscope command; choose another --out"
                    )
    check_same_run(out, kind, run, force)
    check_writable(out)
    return out


@contextlib.contextmanager
def _flock(path: Path, *, blocking: bool = True, timeout: float | None = None) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on the directory ``path`` for the block; yields False when
    it is not free (at once without ``blocking``, after ``timeout`` s with one). The kernel drops
    the lock when its holder dies, so a lock held means a live process. (No-op that yields True
    where flock is missing.)"""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield True
        return
    import time

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # unreadable directory: it cannot be locked, carry on without the lock
        yield True
        return
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if not blocking or deadline else 0))
                break
            except BlockingIOError:
                if deadline is None or time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.05)
            except OSError:  # a file system without flock on directories (NFS, some Lustre mounts)
                break
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def exclusive_dir(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Refuse a second live ``what`` run on the same directory (commands that keep working in
    a directory: reproduce, train, zoo). The lock goes with the process, even on SIGKILL."""
    with _flock(Path(path), blocking=False) as free:
        if not free:
            raise SinkscopeError(
                f"{path} is in use by another {what} run; wait for it to finish or choose another --out"
            )
        yield


def _prefix(name: str, what: str) -> str:
    """``.NAME.tmp-`` / ``.NAME.old-``, with NAME cut so that the temp name stays a legal file name."""
    return f".{name.encode('utf-8')[:96].decode('utf-8', 'ignore')}.{what}-"


def clean_stale(parent: Path, name: str | None = None) -> None:
    """Remove the temp directories ``.NAME.tmp-*`` / ``.NAME.old-*`` (every name when None) that
    a killed run (SIGKILL, power loss) left beside ``parent/NAME``. Only directories sinkscope
    made go (they hold its temp marker), and only a dead run's: a live run holds a lock on its
    temp directory."""
    import glob

    for what in ("tmp", "old"):
        pattern = glob.escape(_prefix(name, what)) + "*" if name is not None else f".*.{what}-*"
        for stale in parent.glob(pattern):
            if not stale.is_dir() or stale.is_symlink() or not (stale / TMP_MARKER).exists():
                continue
            try:
                with _flock(stale, blocking=False) as free:
                    if free:
                        shutil.rmtree(stale, ignore_errors=True)
            except FileNotFoundError:  # its run finished (and renamed it) meanwhile
                pass


@contextlib.contextmanager
def atomic_output_dir(
    out: str | os.PathLike,
    *,
    kind: str = "result",
    overwrite: bool = True,
    run: dict | None = None,
    force: bool = False,
) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out`` only when the block succeeds.

    An existing ``out`` is replaced only if it is an earlier sinkscope output (it holds the
    ``.sinkscope`` marker) of the same ``run`` (its settings; any run with ``force``); anything
    else is refused rather than deleted.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> with atomic_output_dir(d) as tmp:
    ...     _ = (tmp / "a.txt").write_text("ok")
    >>> sorted(p.name for p in d.iterdir())
    ['.sinkscope', 'a.txt']
    """
    out = check_output_dir(out, kind=kind, overwrite=overwrite, run=run, force=force)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out.parent, out.name)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(out.name, "tmp"), dir=out.parent))
    old = None
    try:
        tmp_lock = contextlib.ExitStack()
        with tmp_lock:
            tmp_lock.enter_context(
                _flock(tmp)
            )  # marks the temp dir as live for clean_stale of a concurrent run
            (tmp / TMP_MARKER).write_text("a sinkscope run is writing here\n")
            yield tmp
            (tmp / TMP_MARKER).unlink()
            mark(tmp, kind, run)
            publish_mode(tmp, directory=True)
            # two runs finishing on one --out at once: their swaps take turns (last one wins,
            # each result whole); a parent lock, as only directories the user named are involved
            with (
                _flock(out.parent, timeout=60) as free,
                _signals_deferred(),
            ):  # the two renames together or not at all
                if not free:
                    raise SinkscopeError(
                        f"--out {out}: its directory stayed locked by another sinkscope run for 60 s; retry when it is done"
                    )
                check_output_dir(
                    out, kind=kind, overwrite=overwrite, busy=False, run=run, force=force
                )  # still ours to replace
                if out.exists():
                    old = Path(tempfile.mkdtemp(prefix=_prefix(out.name, "old"), dir=out.parent))
                    os.replace(out, old)  # onto the empty directory just made
                    (old / TMP_MARKER).write_text("a replaced sinkscope result, to be removed\n")
                os.replace(tmp, out)
                tmp_lock.close()  # before the parent lock goes: the next swap must not find out "in use"
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if (
            old is not None and old.exists() and not out.exists()
        ):  # stopped between the renames: put it back
            with contextlib.suppress(OSError):
                (old / TMP_MARKER).unlink(missing_ok=True)
                os.replace(old, out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` through a temporary file in the same directory and ``os.replace``: readers
    (and an interrupted run) see the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        publish_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN / ±inf float replaced by None, so that it is strict JSON.

    >>> finite_json({"a": float("nan"), "b": [1.0, float("inf")], "c": "x"})
    {'a': None, 'b': [1.0, None], 'c': 'x'}
    """
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write strict JSON (NaN / inf as null) through a temporary file and ``os.replace``."""
    write_text_atomic(
        path, json.dumps(finite_json(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"
    )
