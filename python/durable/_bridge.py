"""Hands finished Rust futures to the event loop (see rust/bindings/runtime.rs).

Each event loop gets one ``Waker``: a queue of results filled by the Rust
I/O threads and a socket the loop watches. The loop drains the queue in one
callback, so the I/O threads never take the GIL.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any
from weakref import WeakKeyDictionary

from . import _core

#: Each loop's waker, and the process that made it: a child made by fork()
#: must not share the parent's wake-up socket, so it makes its own.
_wakers: WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[int, _core.Waker]] = WeakKeyDictionary()


def pending() -> tuple[asyncio.Future[Any], _core.Waker]:
    """A new future of the running loop, and the loop's waker (made on first use)."""
    loop = asyncio.get_running_loop()
    pid = os.getpid()
    made = _wakers.get(loop)
    if made is None or made[0] != pid:
        if made is not None:
            loop.remove_reader(made[1].fileno())
        waker = _core.Waker()
        loop.add_reader(waker.fileno(), waker.drain)
        _wakers[loop] = made = (pid, waker)
    return loop.create_future(), made[1]
