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


def check_output_dir(out: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Fail early (before any work) if ``out`` cannot be (re)placed by a sinkscope result."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise SinkscopeError(f"--out {out} is an existing file; pass a directory path")
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise SinkscopeError(
                f"--out {out} exists and is not a sinkscope output; choose a new or empty directory"
            )
        if not overwrite:
            raise SinkscopeError(f"--out {out} already exists; remove it or pass --force")
    return out


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
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        (tmp / MARKER).write_text("sinkscope output directory\n")
        publish_mode(tmp, directory=True)
        old = None
        with _sigint_deferred():  # the two renames happen together or not at all
            if out.exists():
                old = out.parent / f".{out.name}.old-{os.getpid()}"
                os.replace(out, old)
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


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON through a temporary file and ``os.replace``."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
