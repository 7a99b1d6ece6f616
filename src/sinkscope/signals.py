"""Signals: run a block under a handler, defer Ctrl-C / SIGTERM across a critical section, and
remember a Ctrl-C that Python swallowed (stdlib only)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from types import FrameType


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C on its way out that says what the interrupted command kept (``note``)."""

    def __init__(self, note: str) -> None:
        super().__init__(note)
        self.note = note


@contextlib.contextmanager
def signal_handlers(
    handler: Callable[[int, FrameType | None], Any], *signals: int
) -> Iterator[dict]:
    """Run the block with ``handler(signum, frame)`` as the handler of ``signals`` (default
    SIGINT) and put the previous ones back after; yields ``{signal: previous handler}``, empty off
    the main thread (where Python cannot set handlers, and nothing is changed). Python runs
    handlers in the main thread whichever thread the OS delivered the signal to."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    before = {sig: signal.signal(sig, handler) for sig in signals or (signal.SIGINT,)}
    try:
        yield before
    finally:
        for sig, h in before.items():
            signal.signal(sig, h)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold a Ctrl-C or SIGTERM back for the few system calls inside and act on it right after,
    through the handler that was in place (``default_int_handler`` raises KeyboardInterrupt;
    the CLI's SIGTERM handler raises its own exception)."""
    import signal

    got: list[int] = []
    with signal_handlers(
        lambda signum, frame: got.append(signum), signal.SIGINT, signal.SIGTERM
    ) as before:
        yield
    for sig in dict.fromkeys(got):
        h = before[sig]
        if callable(h):
            h(sig, None)
        elif h == signal.SIG_DFL:
            signal.raise_signal(sig)


@contextlib.contextmanager
def interrupt_guard() -> Iterator[Callable[[], None]]:
    """Ctrl-C raises ``KeyboardInterrupt`` at once, as usual, and is also remembered: Python can
    swallow that exception (when the signal lands in a weakref callback or ``__del__`` during
    garbage collection, it only prints "Exception ignored"), so the run calls the yielded
    ``check()`` at every stage boundary and stops there. Either way no stage is half-written."""
    import signal

    hit: list[int] = []

    def check() -> None:
        if hit:
            raise KeyboardInterrupt

    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield check  # a caller's own handler: not ours to replace
        return

    def handler(signum, frame):
        hit.append(signum)
        raise KeyboardInterrupt

    with signal_handlers(handler):
        yield check
