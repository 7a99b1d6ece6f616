"""Atomic output: a result directory or file appears complete or not at all."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import SinkscopeError

MARKER = ".sinkscope"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a temp-created file/dir the permissions a normal ``open``/``mkdir`` would have."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def is_sinkscope_dir(path: str | os.PathLike) -> bool:
    """True for a directory sinkscope made (it holds the ``.sinkscope`` marker) or an empty one:
    the only kinds sinkscope may clear or replace."""
    path = Path(path)
    return path.is_dir() and ((path / MARKER).exists() or not any(path.iterdir()))


def mark(path: str | os.PathLike, what: str = "sinkscope output directory") -> None:
    """Put the ``.sinkscope`` marker into a directory sinkscope created."""
    if not (Path(path) / MARKER).exists():
        write_text_atomic(Path(path) / MARKER, what + "\n")


def check_writable(out: str | os.PathLike, flag: str = "--out") -> None:
    """Fail early if nothing can be created at ``out``: probe the nearest existing ancestor by
    making (and removing) a directory there, which also catches read-only file systems."""
    out = Path(out).absolute()
    # results are swapped in from a temp directory beside ``out``, so its parent must take new
    # entries; an existing ``out`` (reproduce, train, zoo write into it) must too
    nearest = next(p for p in out.parents if p.exists())
    for d in ([out] if out.is_dir() else []) + [nearest]:
        if not d.is_dir():
            raise SinkscopeError(f"{flag} {out}: {d} is a file, not a directory; choose another path")
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".sinkscope-probe-", dir=d))
        except OSError as e:
            raise SinkscopeError(f"{flag} {out} cannot be written ({e.strerror}: {d}); choose a writable directory") from None


def check_output_dir(out: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Fail early (before any work) if ``out`` cannot be (re)placed by a sinkscope result."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise SinkscopeError(f"--out {out} is an existing file; pass a directory path")
        if not is_sinkscope_dir(out):
            raise SinkscopeError(
                f"--out {out} exists and is not a sinkscope output; choose a new or empty directory"
            )
        if not overwrite:
            raise SinkscopeError(f"--out {out} already exists; remove it or pass --force")
    check_writable(out)
    return out


@contextlib.contextmanager
def _flock(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on the directory ``path`` for the block; yields False when
    ``blocking`` is off and another process holds it. The kernel drops the lock when its holder
    dies, so a lock held means a live process. (No-op that yields True where flock is missing.)"""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield True
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def exclusive_dir(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Refuse a second live ``what`` run on the same directory (commands that keep working in
    a directory: reproduce, train, zoo). The lock goes with the process, even on SIGKILL."""
    with _flock(Path(path), blocking=False) as free:
        if not free:
            raise SinkscopeError(f"{path} is in use by another {what} run; wait for it to finish or choose another --out")
        yield


def clean_stale(parent: Path, name: str = "*") -> None:
    """Remove the temp directories ``.NAME.tmp-*`` / ``.NAME.old-*`` that a killed run (SIGKILL,
    power loss) left beside ``parent/NAME``. A live run holds a lock on its temp directory, so
    only dead runs' leftovers go."""
    for pattern in (f".{name}.tmp-*", f".{name}.old-*"):
        for stale in parent.glob(pattern):
            if not stale.is_dir():
                continue
            try:
                with _flock(stale, blocking=False) as free:
                    if free:
                        shutil.rmtree(stale, ignore_errors=True)
            except FileNotFoundError:  # its run finished (and renamed it) meanwhile
                pass


@contextlib.contextmanager
def sigint_handler(handler) -> Iterator[object | None]:
    """Run the block with ``handler(signum, frame)`` as the SIGINT handler and put the previous
    one back after; yields the previous handler, or None off the main thread (where Python cannot
    set handlers, and nothing is changed). Python runs handlers in the main thread whichever
    thread the OS delivered the signal to."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    before = signal.signal(signal.SIGINT, handler)
    try:
        yield before
    finally:
        signal.signal(signal.SIGINT, before)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C back for the few system calls inside and act on it right after, through the
    SIGINT handler that was in place (``default_int_handler`` raises KeyboardInterrupt)."""
    import signal

    got: list[int] = []
    with sigint_handler(lambda signum, frame: got.append(signum)) as before:
        yield
    if got and callable(before):
        before(signal.SIGINT, None)


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out`` only when the block succeeds.

    An existing ``out`` is replaced only if it is an earlier sinkscope output (it holds the
    ``.sinkscope`` marker); anything else is refused rather than deleted.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> with atomic_output_dir(d) as tmp:
    ...     _ = (tmp / "a.txt").write_text("ok")
    >>> sorted(p.name for p in d.iterdir())
    ['.sinkscope', 'a.txt']
    """
    out = check_output_dir(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out.parent, out.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old = None
    try:
        with _flock(tmp):  # marks the temp dir as live for clean_stale of a concurrent run
            yield tmp
            (tmp / MARKER).write_text("sinkscope output directory\n")
            publish_mode(tmp, directory=True)
            # two runs finishing on one --out at once: their swaps take turns (last one wins,
            # each result whole); a parent lock, as only directories the user named are involved
            with _flock(out.parent), _sigint_deferred():  # the two renames together or not at all
                check_output_dir(out, overwrite=overwrite)  # still ours to replace
                if out.exists():
                    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                    os.replace(out, old)  # onto the empty directory just made
                os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
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
    write_text_atomic(path, json.dumps(finite_json(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")
