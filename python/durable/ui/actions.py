"""The actions of ``durable ui`` beyond cancel, resume and pause: send a
message to a run, start a workflow by its registered name, fork a root from
one of its steps, and cancel or resume every run that matches the runs
page's filters (a preview count first, then at most ``BULK_CAP`` runs, none
newer than the preview saw).

Each write answers JSON: ``{"ok": true, ...}`` or ``{"ok": false, "error":
...}`` with a status that says why (400 bad input, 404 no such run, 409 a
conflict, 503 the database); the guard lets writes through only with the
custom header, and never in read-only mode."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import _cli_render as render
from .._db import cancel
from .._fork import KEEP, fork
from .._json import Json
from .._messages import send
from .._core import MAX_DURATION
from .._options import count, seconds
from .._options import moment as in_utc
from .._queues import list_queues
from .._runs import resume
from ..errors import ConfigError, DurableError, InputMismatch, InvalidName, NotJson, ValueTooLarge, WorkflowNotFound
from .pages import READ_TIMEOUT, Filters, Pages, api_path, filter_refused, root_url

#: A bulk action acts on at most this many runs (the newest that match).
BULK_CAP = 1000
#: How many of the newest roots the start page reads for the names of functions.
RECENT_ROOTS = 500
#: The queue a workflow goes to when its decorator names none (made at first enqueue).
DEFAULT_QUEUE = "default"
#: Runs a group of the bulk action's calls at once (each is one short transaction).
BULK_BATCH = 16
#: Beyond the ids a run can have (a bigint).
MAX_ID = 2**63 - 1


class Refused(Exception):
    """Bad input: answered with ``status`` and the message, as JSON."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


#: Per bulk action: the statuses it applies to, what it calls, and its words.
BULK: dict[str, tuple[tuple[str, ...], Callable[[Any, str], Awaitable[bool]], str, str]] = {
    "cancel": (("pending", "queued", "scheduled", "running"), cancel, "unfinished", "cancelled"),
    "resume": (("failed", "cancelled"), resume, "failed or cancelled", "resumed"),
}


def answer(status: int, **fields: Any) -> JSONResponse:
    return JSONResponse({"ok": status < 400, **fields}, status)


async def answered(doing: Awaitable[JSONResponse]) -> JSONResponse:
    """``doing``'s answer, or the error it met as JSON with its status."""
    try:
        return await doing
    except Refused as exc:
        return answer(exc.status, error=str(exc))
    except WorkflowNotFound as exc:
        return answer(404, error=str(exc))
    except InputMismatch as exc:
        return answer(409, error=str(exc))
    except (InvalidName, ConfigError, NotJson, ValueTooLarge) as exc:
        return answer(400, error=str(exc))
    except DurableError as exc:  # a lost database, a statement timeout
        return answer(503, error=str(exc))


async def form_of(request: Request) -> dict[str, str]:
    """The request's body: a JSON object of strings (the form's fields),
    each one text (no lone surrogate: ``"\\ud800"`` is valid JSON, but no
    name, topic or key can hold it, nor can an answer that repeats it)."""
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):
        raise Refused(400, "the request's body must be a JSON object of the form's fields") from None
    if not isinstance(body, dict) or not all(isinstance(v, str) for v in body.values()):
        raise Refused(400, "the request's body must be a JSON object of strings")
    for field, value in body.items():
        if not is_text(field) or not is_text(value):
            raise Refused(400, f"the field {field!a} holds a lone surrogate (\\ud800 to \\udfff): it is not text")
    return body


def is_text(value: str) -> bool:
    """Whether ``value`` is Unicode text (UTF-8 can encode it)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def parsed(what: str, text: str) -> Json:
    """``text`` as JSON, or a ``Refused`` that says where it is wrong."""
    try:
        value: Json = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise Refused(400, f"{what} is not valid JSON: {exc.msg} at {where} (text needs quotes: \"ok\")") from None
    except RecursionError:
        raise Refused(400, f"{what} is nested too deep to be read (arrays and objects within each other)") from None
    return value


def in_words(filters: Filters) -> str:
    """The filters of a bulk action, as the confirmation says them."""
    words = []
    if filters.status:
        words.append(f"status {filters.status}")
    if filters.workflow:
        words.append(f"workflow {filters.workflow!r}")
    if filters.queue:
        words.append(f"queue {filters.queue!r}")
    if filters.prefix:
        words.append(f"name starting with {filters.prefix!r}")
    if filters.since:
        words.append(f"created since {filters.since}")
    if filters.until:
        words.append(f"created before {filters.until}")
    if filters.input:
        words.append(f"input matching {filters.input}")
    return ", ".join(words) if words else "no filter (every run)"


def runs(n: int) -> str:
    return f"{n} run" + ("" if n == 1 else "s")


class Actions:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.db = pages.db

    # Send a message.

    async def send(self, request: Request) -> Response:
        # To the run at the path of the URL: a root or a child, each name one segment.
        return await answered(self.sending(request, api_path(request, "send")))

    async def sending(self, request: Request, path: tuple[str, ...]) -> JSONResponse:
        form = await form_of(request)
        topic = form.get("topic", "")
        if not topic:
            raise Refused(400, "a topic is needed: the one the workflow receives on (ctx.recv(topic))")
        text = form.get("value", "").strip()
        if not text:
            raise Refused(400, 'the value is empty: write a JSON value, like "ok" or {"approved": true}')
        value = parsed("the value", text)
        if value is None:
            raise Refused(400, "null cannot be sent: recv returns None when no message came; send another value")
        key = form.get("key") or None
        if not await send(self.db, path, topic, value, key):
            raise Refused(409, f"already sent with that key ({key!r}): nothing sent again")
        return answer(200, message="sent")

    # Start a workflow.

    async def start_page(self, request: Request) -> Response:
        if self.pages.read_only:
            message = "this server is read-only: it starts nothing"
            return self.pages.page("missing.html", 404, title="Read-only", message=message)
        try:
            known = await self.db._engine.known_workflows(RECENT_ROOTS, READ_TIMEOUT)
            queues = await self.queue_names()
        except DurableError as exc:
            return self.pages.page("missing.html", 503, title="Cannot read the workflows", message=str(exc))
        return self.pages.page("start.html", workflows=known, queues=queues, default_queue=DEFAULT_QUEUE)

    async def queue_names(self) -> list[str]:
        """The queues that exist, and the default one (made at first enqueue)."""
        names = {queue.name for queue in await list_queues(self.db)} | {DEFAULT_QUEUE}
        return sorted(names)

    async def start(self, request: Request) -> Response:
        return await answered(self.starting(request))

    async def starting(self, request: Request) -> JSONResponse:
        form = await form_of(request)
        workflow = form.get("workflow", "").strip()
        if not workflow:
            raise Refused(400, "a workflow is needed: the registered name of its function (app.ingest)")
        queue = form.get("queue") or DEFAULT_QUEUE
        queues = await self.queue_names()
        if queue not in queues:
            raise Refused(400, f"unknown queue {queue!r}: choose one of {', '.join(queues)}")
        text = form.get("input", "").strip()
        value = None if not text else parsed("the input", text)
        delay, run_at = when(form.get("delay", "").strip(), form.get("run_at", "").strip())
        priority = integer("priority", form.get("priority", "").strip() or "0")
        count("priority", priority, at_least=-(2**31), at_most=2**31 - 1)
        name = form.get("name", "").strip() or fresh_name(workflow)
        [(_, _, created, _)] = await self.db._engine.enqueue_many(
            [name], workflow, [value], queue, delay, priority, None, run_at
        )
        if not created:
            raise Refused(409, f"a run named {name!r} exists already: choose another name (or none, for a new one)")
        return answer(200, url=root_url(name))

    # Fork.

    async def fork(self, request: Request) -> Response:
        return await answered(self.forking(request, api_path(request, "fork")))

    async def forking(self, request: Request, path: tuple[str, ...]) -> JSONResponse:
        if len(path) != 1:
            raise Refused(400, f"a child workflow is forked with its root: fork {path[0]!r} from the child")
        name = path[0]
        form = await form_of(request)
        new_name = form.get("new_name", "").strip()
        if not new_name:
            raise Refused(400, "the fork needs a name of its own")
        from_step = form.get("from_step") or None
        # Absent: the form's input was not edited (the source's is kept exactly).
        value = KEEP if "input" not in form else parsed("the input", form["input"].strip() or "null")
        await fork(self.db, name, new_name, from_step=from_step, input=value)
        return answer(200, url=root_url(new_name))

    # Cancel or resume every run that matches.

    async def bulk_preview(self, request: Request) -> Response:
        return await answered(self.previewing(request, request.path_params["action"]))

    async def previewing(self, request: Request, action: str) -> JSONResponse:
        statuses, _, which, done = bulk_action(action)
        filters = matching(request, also=())
        with on_filters(filters):
            total = await self.count(filters, affected(filters, statuses))
            newest = await self.pages.list(replace(filters, status=None), 1)
        upto = newest[0].id if newest else 0
        words = in_words(filters)
        if total == 0:
            return answer(200, count=0, message=f"No {which} run matches {words}: nothing to do.")
        verb = action.capitalize()
        question = f"{verb} {runs(min(total, BULK_CAP))} ({which}) matching {words}?"
        if total > BULK_CAP:
            question = (
                f"{verb} {BULK_CAP}+ runs ({which}) matching {words}? "
                f"Only the newest {BULK_CAP} will be {done}."
            )
        if action == "cancel":
            question += " Each is cancelled with every unfinished workflow under it."
        act = f"/api/bulk/{action}" + filters.url(upto=upto)[1:]
        return answer(200, count=min(total, BULK_CAP), capped=total > BULK_CAP, question=question, act=act)

    async def count(self, filters: Filters, statuses: tuple[str, ...]) -> int:
        """How many roots of ``statuses`` match, each status counting at
        most ``BULK_CAP + 1`` (enough to say "more than the cap")."""
        if not statuses:
            return 0
        found = await self.db._engine.count_runs(list(statuses), filters.query(BULK_CAP + 1), READ_TIMEOUT)
        return sum(found)

    async def bulk(self, request: Request) -> Response:
        return await answered(self.acting(request, request.path_params["action"]))

    async def acting(self, request: Request, action: str) -> JSONResponse:
        statuses, call, _, done = bulk_action(action)
        filters = matching(request, also=("upto",))
        upto = integer("upto", request.query_params.get("upto", ""))
        if not 0 <= upto < MAX_ID:
            raise Refused(400, f"upto must be a run's id, from 0 to {MAX_ID - 1}, not {upto}")
        # Only the runs the preview could see: ids up to its newest.
        below = replace(filters, before=upto + 1)
        found = []
        with on_filters(filters):
            for status in affected(filters, statuses):
                found += await self.pages.list(replace(below, status=status), BULK_CAP)
        found.sort(key=lambda run: run.id, reverse=True)
        names = [run.name for run in found[:BULK_CAP]]
        acted = 0
        for at in range(0, len(names), BULK_BATCH):
            outcomes = await asyncio.gather(*(call(self.db, name) for name in names[at : at + BULK_BATCH]))
            acted += sum(1 for outcome in outcomes if outcome)
        return answer(200, done=acted, message=f"{runs(acted)} {done}.")


def bulk_action(action: str) -> tuple[tuple[str, ...], Callable[[Any, str], Awaitable[bool]], str, str]:
    if action not in BULK:
        raise Refused(404, f"no bulk action {action!r}: cancel or resume")
    return BULK[action]


def matching(request: Request, *, also: tuple[str, ...]) -> Filters:
    """The runs page's filters (its page cursor dropped), all understood
    (names and values; ``also``: the other parameters the caller reads): a
    filter ignored would widen what a bulk action touches."""
    filters, problems = Filters.parse(request, also=also)
    if problems:
        raise Refused(400, "the filters are not all understood: " + "; ".join(problems))
    if filters.parent:
        raise Refused(400, "bulk actions act on roots: a child workflow is cancelled and resumed with its root")
    return replace(filters, before=None)


@contextmanager
def on_filters(filters: Filters) -> Iterator[None]:
    """Turns a read's failure on a filter's value (a predicate Postgres
    cannot use) into a ``Refused`` (400) that names the filter."""
    try:
        yield
    except DurableError as exc:
        refused = filter_refused(filters, exc)
        if refused is None:
            raise
        raise Refused(400, "the filters are not all understood: " + refused) from None


def affected(filters: Filters, statuses: tuple[str, ...]) -> tuple[str, ...]:
    """The statuses a bulk action acts on, within the status filter."""
    if filters.status is None:
        return statuses
    return (filters.status,) if filters.status in statuses else ()


def integer(what: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise Refused(400, f"{what} must be a whole number, not {text!r}") from None


def when(delay: str, run_at: str) -> tuple[float, str | None]:
    """The start form's delay (``90s``, ``5m``) or time (ISO, UTC unless it
    says otherwise), as the engine's enqueue takes them."""
    if delay and run_at:
        raise Refused(400, "give a delay or a time to run at, not both")
    if delay:
        try:
            return seconds("the delay", render.parse_duration(delay), at_most=MAX_DURATION, zero_ok=True), None
        except ValueError as exc:
            raise Refused(400, str(exc)) from None
    if run_at:
        try:
            moment = datetime.fromisoformat(run_at)
        except ValueError:
            raise Refused(400, f"run at {run_at!r} is not an ISO datetime (2026-11-25T10:00:00Z)") from None
        if moment.utcoffset() is None:
            moment = moment.replace(tzinfo=timezone.utc)
        try:
            return 0.0, in_utc("run at", moment).isoformat()
        except ConfigError as exc:
            raise Refused(400, str(exc)) from None
    return 0.0, None


def fresh_name(workflow: str) -> str:
    """A name for a run started without one: its function's and the time."""
    return f"{workflow}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S.%fZ}"
