"""Hands finished Rust futures to the event loop (see rust/bindings/runtime.rs).

Each event loop gets one ``Waker``: a queue of results filled by the Rust
I/O threads and a socket the loop watches. The loop drains the queue in one
callback, so the I/O threads never take the GIL.
"""

from __future__ import annotations

import asyncio
from typing import Any
from weakref import WeakKeyDictionary

from . import _core

_wakers: WeakKeyDictionary[asyncio.AbstractEventLoop, _core.Waker] = WeakKeyDictionary()


def pending() -> tuple[asyncio.Future[Any], _core.Waker]:
    """A new future of the running loop, and the loop's waker (made on first use)."""
    loop = asyncio.get_running_loop()
    waker = _wakers.get(loop)
    if waker is None:
        waker = _core.Waker()
        loop.add_reader(waker.fileno(), waker.drain)
        _wakers[loop] = waker
    return loop.create_future(), waker
