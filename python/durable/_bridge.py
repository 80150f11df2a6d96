"""Hands finished Rust futures to Python (see rust/bindings/runtime.rs).

Each event loop gets one ``Waker``: a queue of results filled by the Rust
I/O thread and a socket the loop watches. The loop drains the queue in one
callback, so the I/O thread never takes the GIL.

Code that is not async (``durable.sync``) drives the same coroutines with
:func:`run_blocking`, without any event loop: each thread gets a ``Waker``
of its own, the coroutine awaits :class:`BlockingFuture` objects, and the
thread blocks on the waker's socket (the GIL released) until they resolve.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import select
import threading
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from . import _core

R = TypeVar("R")

#: This process's id (``os.getpid`` is a system call, asked at every
#: await): a child made by ``os.fork()`` reads its own.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)

#: Each loop's waker, and the process that made it: a child made by fork()
#: must not share the parent's wake-up socket, so it makes its own.
_wakers: WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[int, _core.Waker]] = WeakKeyDictionary()


class _Thread(threading.local):
    #: This thread's waker for blocking calls, and the process that made it.
    waker: tuple[int, _core.Waker] | None = None
    #: True while ``run_blocking`` drives a coroutine on this thread.
    blocking: bool = False


_thread = _Thread()


class BlockingFuture:
    """The future of a blocking call: what ``Waker.drain`` resolves, and
    what a coroutine driven by ``run_blocking`` awaits."""

    __slots__ = ("_done", "_value", "_error")

    def __init__(self) -> None:
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def set_result(self, value: Any) -> None:
        self._value, self._done = value, True

    def set_exception(self, error: BaseException) -> None:
        self._error, self._done = error, True

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value

    def __await__(self) -> Generator[BlockingFuture, None, Any]:
        if not self._done:
            yield self  # to run_blocking, which waits for it
        return self.result()


def pending() -> tuple[asyncio.Future[Any] | BlockingFuture, _core.Waker]:
    """A new future of the running loop, and the loop's waker (made on first
    use); under ``run_blocking``, a ``BlockingFuture`` and the thread's waker."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        if not _thread.blocking:
            raise RuntimeError(
                "durable's async API needs a running event loop (await it inside async code); "
                "code that is not async can use durable.sync"
            ) from None
        return BlockingFuture(), _thread_waker()
    pid = _pid
    made = _wakers.get(loop)
    if made is None or made[0] != pid:
        if made is not None:
            loop.remove_reader(made[1].fileno())
        waker = _core.Waker()
        loop.add_reader(waker.fileno(), waker.drain)
        _wakers[loop] = made = (pid, waker)
    return loop.create_future(), made[1]


def _thread_waker() -> _core.Waker:
    made = _thread.waker
    if made is None or made[0] != _pid:
        made = _thread.waker = (_pid, _core.Waker())
    return made[1]


def run_blocking(coro: Coroutine[Any, Any, R]) -> R:
    """Runs ``coro`` to its end on this thread, without an event loop.

    The coroutine may await only durable's own futures. It runs in a fresh
    context, so that a workflow's context (of a thread started from inside
    one) does not leak into it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        coro.close()
        raise RuntimeError(
            "durable.sync blocks, so it cannot run on an event loop's thread: await the async API instead"
        )
    context = contextvars.Context()
    outer, _thread.blocking = _thread.blocking, True
    try:
        sent: Any = None
        error: BaseException | None = None
        while True:
            try:
                if error is None:
                    awaited = context.run(coro.send, sent)
                else:
                    awaited = context.run(coro.throw, error)
            except StopIteration as stop:
                value: R = stop.value
                return value
            if not isinstance(awaited, BlockingFuture):
                coro.close()
                raise RuntimeError(f"durable.sync cannot wait for {awaited!r}: only for durable's own futures")
            _wait(awaited)
            sent, error = None, None
            try:
                sent = awaited.result()
            except BaseException as raised:  # handed to the coroutine, as an await would
                error = raised
    finally:
        _thread.blocking = outer


def _wait(future: BlockingFuture) -> None:
    """Blocks (the GIL released) until the Rust side resolves ``future``."""
    waker = _thread_waker()
    while not future.done():
        select.select([waker.fileno()], [], [])
        waker.drain()


async def off_loop(fn: Callable[[], R]) -> R:
    """``fn()``, which blocks, kept off the event loop: in a worker thread
    from async code; called at once under ``run_blocking``, whose thread may block."""
    if _thread.blocking:
        return fn()
    return await asyncio.to_thread(fn)
