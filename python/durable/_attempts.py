"""A step's attempts: the one loop that runs them, the context a step's
body runs in, and what is saved of a failed attempt.

Plain steps (``Ctx.step``), transaction steps (``Ctx.transaction``) and
the wake-up time of a sleep all run their attempts through
:func:`run_attempts`; :class:`StepBody` is the context each body runs in.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import traceback
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._retry import Backoff
from .errors import Cancelled, DurableError, LeaseLost, ValueTooLarge, WorkflowFinished

if TYPE_CHECKING:
    from ._ctx import Ctx, Tree

#: The context of the workflow running in the current task, for
#: ``@durable.step``; None inside a step's body, where decorated steps are
#: plain calls.
current: contextvars.ContextVar[Ctx | None] = contextvars.ContextVar("durable_current_ctx", default=None)

#: The workflow whose step body is running in the current task, if any.
in_step: contextvars.ContextVar[Ctx | None] = contextvars.ContextVar("durable_in_step", default=None)

#: The attempt number of the step body running in the current task.
_attempt: contextvars.ContextVar[int] = contextvars.ContextVar("durable_step_attempt")

#: The policy of a step without ``backoff``: retried at once.
_NO_RETRY = Backoff()

#: Longest message and traceback kept in an error record, in characters.
_MESSAGE_CHARS = 16_000
_TRACEBACK_CHARS = 64_000


def attempt() -> int:
    """The attempt number of the step whose body is running: 1 on its first
    run, 2 and up after a retry, a failure or an interruption. Outside a step
    body, ``LookupError``."""
    try:
        return _attempt.get()
    except LookupError:
        raise LookupError("durable.attempt() is only known inside a step's body") from None


class Retry:
    """What an attempt returns when it failed (its failure recorded) and is retried."""


RETRY = Retry()


async def run_attempts(
    tree: Tree, backoff: Backoff | None, number: int, attempt: Callable[[int, int], Awaitable[Any]]
) -> Any:
    """Runs ``attempt(number, retried)`` until it returns anything but
    ``RETRY``, and returns that (what it raises propagates). ``number`` is
    the attempt's number (the first one's given), ``retried`` how many
    attempts failed before it. Each retry waits its ``backoff`` delay first
    (none without one). An attempt starts only while its workflow ``tree``
    is not being suspended, and counts as a body in flight until it
    returns (see ``Tree``)."""
    policy = backoff or _NO_RETRY
    retried = 0
    while True:
        if retried:
            await asyncio.sleep(policy.delay(retried))
        if tree.held_back():
            await tree.wait_to_start()
        tree.enter()
        try:
            outcome = await attempt(number, retried)
        finally:
            tree.leave()
        if outcome is not RETRY:
            return outcome
        retried += 1
        number += 1


def may_retry(
    exc: Exception, retried: int, retries: int, retry_on: type[Exception] | tuple[type[Exception], ...]
) -> bool:
    """Whether a step whose attempt failed with ``exc``, after ``retried``
    earlier failures, is tried again: ``retries`` allows another attempt
    and ``exc`` matches ``retry_on``."""
    return retried < retries and isinstance(exc, retry_on)


class StepBody:
    """``with StepBody(ctx, number):`` around a step's body: inside it,
    ``durable.attempt()`` is ``number``, the step is ``ctx``'s (``in_step``)
    and no workflow is ``current`` (decorated steps are plain calls). A
    class, not a generator: it runs on every step."""

    __slots__ = ("_ctx", "_number", "_tokens")

    def __init__(self, ctx: Ctx, number: int) -> None:
        self._ctx = ctx
        self._number = number

    def __enter__(self) -> None:
        self._tokens = (_attempt.set(self._number), in_step.set(self._ctx), current.set(None))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        number, step, workflow = self._tokens
        current.reset(workflow)
        in_step.reset(step)
        _attempt.reset(number)


async def call(fn: Callable[[], Any]) -> Any:
    """Calls a step body, sync or async."""
    result = fn()
    if inspect.isawaitable(result):
        result = await result
    return result


def error_record(exc: BaseException, *, brief: bool = False) -> dict[str, str]:
    """What is saved about an exception: enough for a human to act on.

    Every text is made storable: a NUL becomes the four characters ``\\x00``
    and a lone surrogate its ``\\udXXX`` escape; a message or traceback too
    long keeps its beginning and end. ``brief`` keeps only type, module and
    the start of the message (for a value-size limit too small for more).
    """
    kind = type(exc)
    try:
        message = str(exc)
    except Exception:
        message = f"<str() of the {kind.__qualname__} failed>"
    record = {
        "type": _storable(kind.__qualname__, 200),
        "module": _storable(kind.__module__, 200),
        "message": _storable(message, 200 if brief else _MESSAGE_CHARS),
    }
    if not brief:
        try:
            text = "".join(traceback.format_exception(exc))
        except Exception:
            text = "<the traceback could not be formatted>"
        record["traceback"] = _storable(text, _TRACEBACK_CHARS)
    return record


def _storable(text: str, limit: int) -> str:
    """``text`` as Postgres can store it, at most about ``limit`` characters."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    if len(text) > limit:
        cut = len(text) - limit
        text = f"{text[: limit // 2]}\n[... {cut} characters cut ...]\n{text[-(limit // 2) :]}"
    return text


async def record_failure(exc: BaseException, save: Callable[[dict[str, str]], Awaitable[None]]) -> None:
    """Saves a failure with ``save(error_record)``. If the workflow is no
    longer this process's to write (lease lost, cancelled), that is raised
    instead; if saving fails otherwise, the original error says so in a
    note. The original error is never replaced."""
    try:
        try:
            recording = save(error_record(exc))
        except ValueTooLarge:
            recording = save(error_record(exc, brief=True))
        await recording
    except (LeaseLost, Cancelled) as stop:
        raise stop from exc
    except WorkflowFinished:
        pass  # finished already: nothing left to mark
    except DurableError as db_exc:
        exc.add_note(f"durable could not record this failure: {db_exc}")
