"""The pages of ``durable ui``: the runs (status tabs, filters in the URL),
a run's detail (fields, steps, children) and the queues, read through the
read-only API; and the actions' JSON endpoints (cancel, resume, pause)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from .. import _cli_render as render
from .._db import Db, cancel
from .._info import STATUSES, WorkflowInfo, WorkflowTree
from .._queues import list_queues, pause_queue, resume_queue
from .._runs import resume
from .._schedules import to_micros
from ..errors import ConfigError, DurableError, InvalidName

#: A status tab counts at most this many runs ("1000+" beyond): never a full COUNT.
COUNT_CAP = 1000
#: How long the tabs' counts are kept (per filter) before they are read again.
COUNT_TTL = 5.0
#: The longest a read of a page may take (a statement timeout).
READ_TIMEOUT = 10.0
#: How often (seconds) a live page asks whether what it shows has changed
#: (only while something it shows is active, its tab visible, not frozen).
LIVE_EVERY = 2.0
#: How often the queues page reads itself again (its counts have no cheap version).
QUEUES_EVERY = 5.0
#: A run in one of these statuses no longer changes by itself.
FINISHED = frozenset({"completed", "failed", "cancelled"})


def run_url(name: str) -> str:
    """The detail page of the run at path ``name`` (``root/child``)."""
    return "/runs/" + quote(name, safe="/")


def api_url(kind: str, name: str, action: str) -> str:
    """The endpoint that does ``action`` to the run or queue ``name``."""
    return f"/api/{kind}/" + quote(name, safe="/") + f"/{action}"


def pretty(value: Any) -> str:
    """JSON, indented (escaped by the template like any other text)."""
    return json.dumps(render.jsonable(value), indent=2, ensure_ascii=False, sort_keys=False, default=str)


def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("durable.ui", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["run_url"] = run_url
    env.filters["pretty"] = pretty
    env.filters["duration"] = render.duration
    env.globals["api_url"] = api_url
    env.filters["moment"] = render.moment
    env.filters["error_line"] = render.error_line
    env.globals["took"] = render.took
    env.globals["traceback_of"] = traceback_of
    return env


def traceback_of(error: Any) -> str | None:
    """An error record's traceback, if it says more than its own line."""
    if not isinstance(error, dict):
        return None
    traceback = error.get("traceback")
    if not isinstance(traceback, str) or traceback.strip() == render.error_line(error):
        return None
    return traceback


@dataclass(frozen=True)
class Filters:
    """The runs page's filters, as in its URL (so a view can be shared)."""

    status: str | None = None
    workflow: str | None = None
    queue: str | None = None
    prefix: str | None = None
    since: str | None = None
    #: A JSON path predicate on the input (``$.day == 1``).
    input: str | None = None
    limit: int = 50
    #: The keyset cursor: only runs with ids below it (the next page).
    before: int | None = None

    @staticmethod
    def parse(request: Request) -> tuple[Filters, list[str]]:
        """The filters of the URL, and what was wrong in it (ignored)."""
        params = request.query_params
        problems = []
        status = params.get("status") or None
        if status is not None and status not in STATUSES:
            problems.append(f"unknown status {status!r}")
            status = None
        limit = 50
        if params.get("limit"):
            try:
                limit = int(params["limit"])
                if not 1 <= limit <= 1000:
                    raise ValueError
            except ValueError:
                problems.append("limit must be a number from 1 to 1000")
                limit = 50
        before = None
        if params.get("before"):
            try:
                before = int(params["before"])
                if not -(2**63) <= before < 2**63:
                    raise ValueError
            except ValueError:
                problems.append("before must be a run's id")
                before = None
        since = params.get("since") or None
        if since is not None:
            try:
                render.parse_moment(since, datetime.now(timezone.utc))
            except (ValueError, OverflowError) as exc:
                problems.append(str(exc))
                since = None
        return (
            Filters(
                status,
                params.get("workflow") or None,
                params.get("queue") or None,
                params.get("prefix") or None,
                since,
                params.get("input") or None,
                limit,
                before,
            ),
            problems,
        )

    def moment(self) -> datetime | None:
        return None if self.since is None else render.parse_moment(self.since, datetime.now(timezone.utc))

    def url(self, **change: Any) -> str:
        """This view's URL with ``change`` (``status=None`` drops the status),
        from the first page unless ``change`` gives ``before``."""
        values: dict[str, Any] = {"status": self.status, "workflow": self.workflow, "queue": self.queue}
        values |= {"prefix": self.prefix, "input": self.input}
        values |= {"since": self.since, "limit": None if self.limit == 50 else self.limit, "before": None}
        values |= change
        query = urlencode([(k, v) for k, v in values.items() if v is not None])
        return "/" + (f"?{query}" if query else "")


@dataclass(frozen=True)
class Live:
    """How a page keeps itself current (``static/live.js``): it asks ``poll``
    for the version of what it shows every ``every`` seconds while ``active``
    and reads itself again when that differs from ``version``; without
    ``poll``, it reads itself again every time."""

    active: bool
    every: float
    poll: str | None = None
    version: str | None = None


class Pages:
    def __init__(self, db: Db, *, read_only: bool) -> None:
        self.db = db
        self.read_only = read_only
        self.env = templates()
        self.counts: dict[Filters, tuple[float, dict[str | None, str]]] = {}

    def page(self, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(read_only=self.read_only, **values)
        return HTMLResponse(html, status_code)

    async def runs(self, request: Request) -> Response:
        filters, problems = Filters.parse(request)
        try:
            # The version first: a change made while the page is read makes the next poll differ.
            version = await self.list_version(filters)
            runs = await self.list(filters, filters.limit + 1)
            counts = await self.tab_counts(filters)
        except DurableError as exc:  # the statement timeout, a lost database
            return self.page("missing.html", 503, title="Cannot read the runs", message=str(exc))
        older = filters.url(before=runs[filters.limit - 1].id) if len(runs) > filters.limit else None
        return self.page(
            "runs.html",
            filters=filters,
            problems=problems,
            runs=runs[: filters.limit],
            older=older,
            statuses=STATUSES,
            counts=counts,
            now=datetime.now(timezone.utc),
            # The first page may get new runs; any page, runs that change.
            live=Live(
                filters.before is None or any(run.status not in FINISHED for run in runs),
                LIVE_EVERY,
                "/api/live/runs" + filters.url(before=filters.before).removeprefix("/"),
                version,
            ),
        )

    async def list(self, filters: Filters, limit: int) -> list[WorkflowInfo]:
        """The roots that match, newest first, below the cursor: one index
        range, however deep the page (keyset pagination)."""
        since = filters.moment()
        rows = await self.db._engine.browse_runs(
            filters.status,
            filters.queue,
            filters.prefix,
            None if since is None else to_micros(since),
            limit,
            filters.workflow,
            filters.input,
            filters.before,
            READ_TIMEOUT,
        )
        return [WorkflowInfo._from(row) for row in rows]

    async def list_version(self, filters: Filters) -> str:
        """A version of ``list(filters, filters.limit + 1)``: another value
        when a run appears in it, leaves it or changes."""
        since = filters.moment()
        return await self.db._engine.runs_version(
            filters.status,
            filters.queue,
            filters.prefix,
            None if since is None else to_micros(since),
            filters.limit + 1,
            filters.workflow,
            filters.input,
            filters.before,
            READ_TIMEOUT,
        )

    async def runs_version(self, request: Request) -> Response:
        """The version of the runs page with the same filters (``live.js``
        polls it): JSON ``{"version": ...}``."""
        filters, _ = Filters.parse(request)
        try:
            return JSONResponse({"version": await self.list_version(filters)})
        except DurableError as exc:  # the statement timeout, a lost database
            return JSONResponse({"error": str(exc)}, 503)

    async def run_version(self, request: Request) -> Response:
        """The version of a run's page (of its root's whole tree: ``live.js``
        polls it): JSON ``{"version": ...}``, null when there is no such run."""
        try:
            version = await self.db._engine.tree_version(request.path_params["name"], READ_TIMEOUT)
        except (InvalidName, ConfigError) as exc:  # not a path
            return JSONResponse({"error": str(exc)}, 404)
        except DurableError as exc:  # the statement timeout, a lost database
            return JSONResponse({"error": str(exc)}, 503)
        return JSONResponse({"version": version})

    async def tab_counts(self, filters: Filters) -> dict[str | None, str]:
        """Per status (``None``: all), how many runs match the other filters,
        up to ``COUNT_CAP`` (``"1000+"``), kept for ``COUNT_TTL`` seconds."""
        key = Filters(None, filters.workflow, filters.queue, filters.prefix, filters.since, filters.input)
        kept = self.counts.get(key)
        if kept is not None and time.monotonic() - kept[0] < COUNT_TTL:
            return kept[1]
        statuses: list[str | None] = [None, *STATUSES]
        since = filters.moment()
        found = await self.db._engine.count_runs(
            statuses,
            key.queue,
            key.prefix,
            None if since is None else to_micros(since),
            COUNT_CAP + 1,
            key.workflow,
            key.input,
            READ_TIMEOUT,
        )
        counts = {status: f"{COUNT_CAP}+" if n > COUNT_CAP else str(n) for status, n in zip(statuses, found)}
        if len(self.counts) > 100:
            self.counts.clear()
        self.counts[key] = (time.monotonic(), counts)
        return counts

    async def run(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            # The version first: a change made while the page is read makes the next poll differ.
            version = await self.db._engine.tree_version(name, READ_TIMEOUT)
            read = await self.db._engine.browse_tree(name, READ_TIMEOUT)
        except (InvalidName, ConfigError) as exc:  # not a path
            return self.page("missing.html", 404, title="Not found", message=str(exc))
        except DurableError as exc:  # the statement timeout, a lost database
            return self.page("missing.html", 503, title="Cannot read the run", message=str(exc))
        if read is None:
            message = f"there is no workflow named {name!r}"
            return self.page("missing.html", 404, title="Not found", message=message)
        found = WorkflowTree._from(read)
        parents = name.split("/")
        path = [("/".join(parents[: i + 1]), part) for i, part in enumerate(parents)]
        live = Live(found.info.status not in FINISHED, LIVE_EVERY, "/api/live" + run_url(name), version)
        return self.page(
            "run.html", tree=found, path=path, root=len(parents) == 1, now=datetime.now(timezone.utc), live=live
        )

    async def queues(self, request: Request) -> Response:
        try:
            found = await list_queues(self.db)
        except DurableError as exc:  # a lost database
            return self.page("missing.html", 503, title="Cannot read the queues", message=str(exc))
        live = Live(True, QUEUES_EVERY)
        return self.page("queues.html", queues=found, now=datetime.now(timezone.utc), live=live)

    async def cancel_run(self, request: Request) -> Response:
        return await self.act(request, cancel, "it is finished already (or there is no such run)")

    async def resume_run(self, request: Request) -> Response:
        return await self.act(request, resume, "it is neither failed nor cancelled (or there is no such run)")

    async def pause_queue(self, request: Request) -> Response:
        return await self.act(request, pause_queue)

    async def resume_queue(self, request: Request) -> Response:
        return await self.act(request, resume_queue)

    async def act(self, request: Request, action: Any, refused: str = "") -> Response:
        """Does ``action(db, name)`` (a write: the guard let it through only
        with the custom header, never in read-only mode); JSON either way."""
        name = request.path_params["name"]
        try:
            done = await action(self.db, name)
        except (InvalidName, ConfigError) as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, 400)
        except DurableError as exc:  # a lost database
            return JSONResponse({"ok": False, "error": str(exc)}, 503)
        if done is False:
            return JSONResponse({"ok": False, "error": f"cannot do that to {name!r}: {refused}"}, 409)
        return JSONResponse({"ok": True})
