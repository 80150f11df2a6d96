"""The pages of ``durable ui``: the runs (status tabs, filters in the URL),
a run's detail (fields, steps, children) and the queues, read through the
read-only API; and the actions' JSON endpoints (cancel, resume, pause)."""

from __future__ import annotations

import difflib
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, unquote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from .. import _cli_render as render
from .._db import Db, cancel
from .._core import FINISHED_STATUSES, STATUSES
from .._info import WorkflowInfo, WorkflowTree
from .._names import shown
from .._query import RunQuery
from .._queues import QueueInfo, pause_queue, resume_queue
from .._runs import resume
from .._schedules import to_micros
from ..errors import ConfigError, DatabaseError, DurableError, InvalidName
from . import schedules
from .jsonview import COLUMNS, SHOWN_BYTES, ExactJson
from .timeline import History, layout

#: A status tab counts at most this many runs ("1000+" beyond): never a full COUNT.
COUNT_CAP = 1000
#: How long the tabs' counts are kept (per filter) before they are read again.
COUNT_TTL = 5.0
#: The longest a read of a page may take (a statement timeout).
READ_TIMEOUT = 10.0
#: How many ``NAME-fork-N`` a run's page tries for a free fork name (then: the time).
FORK_NAME_TRIES = 20
#: How often (seconds) a live page asks whether what it shows has changed
#: (only while something it shows is active, its tab visible, not frozen).
LIVE_EVERY = 2.0
#: How often the queues page reads itself again (its counts have no cheap version).
QUEUES_EVERY = 5.0
#: The most of an error's line a page shows (a list shows 50 of them).
LINE_CHARS = 1000


def segments(names: Sequence[str]) -> str:
    """A workflow's path in a URL: each name one segment, escaped (a ``/``
    of a name is ``%2F``, never a separator)."""
    return "/".join(quote(name, safe="") for name in names)


def root_url(name: str) -> str:
    """The detail page of the root named ``name``, even one whose name
    holds a ``/`` (each name of a run page's URL is one segment)."""
    return names_url([name])


def names_url(names: Sequence[str]) -> str:
    """The detail page of the run whose path is ``names`` (root first)."""
    return "/runs/" + segments(names)


def child_url(parent_url: str, child: str) -> str:
    """The page of the child named ``child`` from its parent's page."""
    return parent_url + "/" + quote(child, safe="")


def url_names(request: Request, prefix: str) -> list[str]:
    """The names of a run page's path (each segment one name: a ``%2F`` in
    it is a ``/`` of the name, not a separator), after ``prefix``."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else quote(request.url.path, safe="/")
    return [unquote(part) for part in path.removeprefix(prefix).split("/")]


def api_url(kind: str, name: str | Sequence[str], action: str) -> str:
    """The endpoint that does ``action`` to the queue ``name`` or the run
    at the path ``name`` (its names, root first)."""
    where = quote(name, safe="/") if isinstance(name, str) else segments(name)
    return f"/api/{kind}/{where}/{action}"


def api_path(request: Request, action: str) -> tuple[str, ...]:
    """The path of the run an endpoint ``/api/runs/PATH/ACTION`` acts on,
    from the segments of its URL (each one name)."""
    return tuple(url_names(request, "/api/runs/")[:-1])


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
    env.filters["names_url"] = names_url
    env.filters["root_url"] = root_url
    env.globals["child_url"] = child_url
    env.filters["pretty"] = pretty
    env.filters["duration"] = render.duration
    env.globals["api_url"] = api_url
    env.filters["moment"] = render.moment
    env.filters["error_line"] = render.error_line
    env.filters["clip"] = clip
    env.globals["shown_chars"] = SHOWN_BYTES
    env.globals["took"] = render.took
    env.globals["took_of"] = render.took_of
    env.globals["time_text"] = render.time_text
    env.globals["traceback_of"] = traceback_of
    env.globals["finished"] = FINISHED_STATUSES
    return env


def clip(text: str, limit: int = LINE_CHARS) -> str:
    """``text`` up to ``limit`` characters, saying how many more it has
    (an error's message and traceback are values of the workflow's: any size)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit} more characters)"


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
    #: Created at or after / before: a duration back from now (``24h``) or an ISO datetime.
    since: str | None = None
    until: str | None = None
    #: A JSON path predicate on the input (``$.day == 1``).
    input: str | None = None
    #: The child workflows of the run at this path (``?parent=`` once per
    #: name, the root's first), instead of the roots.
    parent: tuple[str, ...] | None = None
    limit: int = 50
    #: The keyset cursor: only runs with ids below it (the next page).
    before: int | None = None

    @staticmethod
    def parse(request: Request, *, also: tuple[str, ...] = ()) -> tuple[Filters, list[str]]:
        """The filters of the URL, and what was wrong in it (ignored): a
        value not understood, a name that is no filter's (nor one of
        ``also``, which the caller reads itself), a filter given twice."""
        params = request.query_params
        problems = [*unknown_names(params.multi_items(), also)]
        status = params.get("status") or None
        if status is not None and status not in STATUSES:
            problems.append(f"unknown status {status!r}")
            status = None
        limit = number(params.get("limit"), "limit must be a number from 1 to 1000", problems, 1, 1000)
        parent = tuple(params.getlist("parent"))
        if parent and not all(parent):
            if parent != ("",):  # the form's empty field: no parent
                problems.append("a parent's path names a workflow by each of its names: none may be empty")
            parent = ()
        if any("\x00" in name for name in parent):
            problems.append("parent cannot hold a NUL character")
            parent = ()
        before = number(params.get("before"), "before must be a run's id", problems, -(2**63), 2**63 - 1)
        return (
            Filters(
                status,
                text_filter(params, "workflow", problems),
                text_filter(params, "queue", problems),
                text_filter(params, "prefix", problems),
                moment_text(params.get("since"), problems),
                moment_text(params.get("until"), problems),
                text_filter(params, "input", problems),
                parent or None,
                50 if limit is None else limit,
                before,
            ),
            problems,
        )

    def bounds(self) -> tuple[int | None, int | None]:
        """``since`` and ``until`` in microseconds since the epoch."""
        now = datetime.now(timezone.utc)

        def micros(text: str | None) -> int | None:
            return None if text is None else to_micros(render.parse_moment(text, now))

        return micros(self.since), micros(self.until)

    def query(self, limit: int) -> RunQuery:
        """What the engine reads for these filters: at most ``limit`` runs."""
        since, until = self.bounds()
        return RunQuery(
            status=self.status,
            queue=self.queue,
            name_prefix=self.prefix,
            since=since,
            until=until,
            workflow=self.workflow,
            input=self.input,
            parent=self.parent,
            before=self.before,
            limit=limit,
        )

    def counted(self) -> Filters:
        """The filters the status tabs count by: all but the status and the page."""
        return Filters(None, self.workflow, self.queue, self.prefix, self.since, self.until, self.input, self.parent)

    def narrowed(self) -> bool:
        """Whether anything but the status narrows the list."""
        return self.counted() != Filters()

    def url(self, **change: Any) -> str:
        """This view's URL with ``change`` (``status=None`` drops the status),
        from the first page unless ``change`` gives ``before``."""
        values: dict[str, Any] = {"status": self.status, "workflow": self.workflow, "queue": self.queue}
        values |= {"prefix": self.prefix, "input": self.input, "parent": self.parent}
        values |= {"since": self.since, "until": self.until}
        values |= {"limit": None if self.limit == 50 else self.limit, "before": None}
        values |= change
        query = urlencode([(k, v) for k, v in values.items() if v is not None], doseq=True)
        return "/" + (f"?{query}" if query else "")


#: The names of the runs page's filters, as its URL carries them.
FILTER_NAMES = ("status", "workflow", "queue", "prefix", "since", "until", "input", "parent", "limit", "before")
#: The filters given once per item: ``parent`` once per name of its path.
REPEATED = frozenset({"parent"})


def unknown_names(items: list[tuple[str, str]], also: tuple[str, ...]) -> list[str]:
    """What is wrong with the names of the URL's parameters ``items``: a
    name that is no filter's (a typo: ``stauts``), or one given twice (which
    of the two would be meant?) but ``REPEATED``. Either, ignored, could
    widen a bulk action."""
    known = (*FILTER_NAMES, *also)
    names = [name for name, _ in items]
    problems = []
    for name in dict.fromkeys(names):
        if name not in known:
            close = difflib.get_close_matches(name, FILTER_NAMES, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the filters are {', '.join(FILTER_NAMES)}"
            problems.append(f"unknown filter {name!r} ({hint})")
        elif names.count(name) > 1 and name not in REPEATED:
            problems.append(f"filter {name!r} is given {names.count(name)} times: give it once")
    return problems


def text_filter(params: QueryParams, name: str, problems: list[str]) -> str | None:
    """The text filter ``name``, None if empty or if Postgres cannot hold
    it (a NUL character: said)."""
    value = params.get(name) or None
    if value is not None and "\x00" in value:
        problems.append(f"{name} cannot hold a NUL character")
        return None
    return value


def number(text: str | None, problem: str, problems: list[str], low: int, high: int) -> int | None:
    """``text`` as an int from ``low`` to ``high``; None (and ``problem``
    said) if it is not one, None if absent."""
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        problems.append(problem)
        return None
    return value


def moment_text(text: str | None, problems: list[str]) -> str | None:
    """``text`` if it is a moment (``24h`` back, or an ISO datetime), else
    None (and why said)."""
    if not text:
        return None
    try:
        render.parse_moment(text, datetime.now(timezone.utc))
    except (ValueError, OverflowError) as exc:
        problems.append(str(exc))
        return None
    return text


#: What Postgres answers to a JSON path predicate it cannot use: a syntax
#: error, no predicate at all (blank), a bad ``like_regex``, an unknown
#: ``$variable``.
PREDICATE_ERRORS = frozenset({"42601", "22P02", "2201B", "42704"})


def filter_refused(filters: Filters, exc: DurableError) -> str | None:
    """Why a read of the runs failed on a filter's value (the input
    predicate, the parent's path), said with the filter's name; None when
    it failed on the database (a timeout, a lost connection)."""
    if filters.parent is not None and isinstance(exc, (InvalidName, ConfigError)):
        return f"parent {', '.join(repr(name) for name in filters.parent)} is not a run's path: {exc}"
    if filters.input is not None and isinstance(exc, DatabaseError) and exc.sqlstate in PREDICATE_ERRORS:
        return f"input {filters.input!r} is not a JSON path predicate Postgres can use: {exc}"
    return None


@dataclass(frozen=True)
class Counts:
    """The status tabs' counts (``None``: all), and the estimated number of
    all the roots when there are more than the tabs count."""

    tabs: dict[str | None, str]
    estimate: str | None


def about(n: int) -> str:
    """``n`` rounded for a reader: ``1.2M``, ``34k``, ``980``."""
    for size, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if n >= size:
            shown = f"{n / size:.1f}".removesuffix(".0") if n < 10 * size else f"{n // size}"
            return shown + unit
    return str(n)


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
        self.counts: dict[Filters, tuple[float, Counts]] = {}

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
            refused = filter_refused(filters, exc)
            if refused is not None:
                return self.page("missing.html", 400, title="Cannot use the filters", message=refused)
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
                filters.before is None or any(run.status not in FINISHED_STATUSES for run in runs),
                LIVE_EVERY,
                "/api/live/runs" + filters.url(before=filters.before).removeprefix("/"),
                version,
            ),
        )

    async def list(self, filters: Filters, limit: int) -> list[WorkflowInfo]:
        """The runs that match, newest first, below the cursor: one index
        range, however deep the page (keyset pagination)."""
        rows = await self.db._engine.browse_runs(filters.query(limit), READ_TIMEOUT)
        return [WorkflowInfo._from(row) for row in rows]

    async def list_version(self, filters: Filters) -> str:
        """A version of ``list(filters, filters.limit + 1)``: another value
        when a run appears in it, leaves it or changes."""
        return await self.db._engine.runs_version(filters.query(filters.limit + 1), READ_TIMEOUT)

    async def runs_version(self, request: Request) -> Response:
        """The version of the runs page with the same filters (``live.js``
        polls it): JSON ``{"version": ...}``."""
        filters, _ = Filters.parse(request)
        try:
            return JSONResponse({"version": await self.list_version(filters)})
        except DurableError as exc:  # the statement timeout, a lost database
            refused = filter_refused(filters, exc)
            return JSONResponse({"error": refused or str(exc)}, 503 if refused is None else 400)

    async def run_version(self, request: Request) -> Response:
        """The version of a run's page (of its root's whole tree: ``live.js``
        polls it): JSON ``{"version": ...}``, null when there is no such run."""
        names = url_names(request, "/api/live/runs/")
        if "" in names:  # as the run's page refuses it
            return JSONResponse({"error": f"invalid workflow name in the path {tuple(names)!r}: it is empty"}, 404)
        try:
            version = await self.db._engine.tree_version(names[0], READ_TIMEOUT)
        except (InvalidName, ConfigError) as exc:  # not a path
            return JSONResponse({"error": str(exc)}, 404)
        except DurableError as exc:  # the statement timeout, a lost database
            return JSONResponse({"error": str(exc)}, 503)
        return JSONResponse({"version": version})

    async def tab_counts(self, filters: Filters) -> Counts:
        """Per status (``None``: all), how many runs match the other filters,
        up to ``COUNT_CAP`` (``"1000+"``), kept for ``COUNT_TTL`` seconds; and
        without filters, the planner's estimate of all the roots."""
        key = filters.counted()
        kept = self.counts.get(key)
        if kept is not None and time.monotonic() - kept[0] < COUNT_TTL:
            return kept[1]
        statuses: list[str | None] = [None, *STATUSES]
        found = await self.db._engine.count_runs(statuses, key.query(COUNT_CAP + 1), READ_TIMEOUT)
        tabs = {status: f"{COUNT_CAP}+" if n > COUNT_CAP else str(n) for status, n in zip(statuses, found)}
        estimate = None
        if found[0] > COUNT_CAP and not key.narrowed():
            estimate = await self.db._engine.estimate_roots()
        counts = Counts(tabs, about(estimate) if estimate and estimate > COUNT_CAP else None)
        if len(self.counts) > 100:
            self.counts.clear()
        self.counts[key] = (time.monotonic(), counts)
        return counts

    async def run(self, request: Request) -> Response:
        names = url_names(request, "/runs/")
        try:
            # The version first: a change made while the page is read makes the next poll differ.
            version = await self.db._engine.tree_version(names[0], READ_TIMEOUT)
            read = await self.db._engine.browse_tree(names, READ_TIMEOUT)
        except (InvalidName, ConfigError) as exc:  # not a path
            return self.page("missing.html", 404, title="Not found", message=str(exc))
        except DurableError as exc:  # the statement timeout, a lost database
            return self.page("missing.html", 503, title="Cannot read the run", message=str(exc))
        if read is None:
            message = f"there is no workflow {shown(tuple(names))}"
            return self.page("missing.html", 404, title="Not found", message=message)
        found = WorkflowTree._from(read)
        path = [(names_url(names[: i + 1]), part) for i, part in enumerate(names)]
        root = len(names) == 1
        fork_name = await self.free_fork_name(names[0]) if root and not self.read_only else None
        now = datetime.now(timezone.utc)
        live = Live(found.info.status not in FINISHED_STATUSES, LIVE_EVERY, "/api/live" + names_url(names), version)
        timeline = layout(found, History._from(read), now)
        exact = ExactJson(read.get("json", ()))
        try:
            ahead = await self.runs_ahead(found.info, now)
        except DurableError as exc:  # the statement timeout, a lost database
            return self.page("missing.html", 503, title="Cannot read the run", message=str(exc))
        return self.page(
            "run.html",
            tree=found,
            path=path,
            root=root,
            fork_name=fork_name,
            now=now,
            live=live,
            timeline=timeline,
            exact=exact,
            ahead=ahead,
        )

    async def value(self, request: Request) -> Response:
        """The whole JSON value of a task's input, output or error, as the
        database holds it: what the run page links to in place of a value
        too large to show."""
        task_id = number(request.path_params["task_id"], "", [], 0, 2**63 - 1)
        column = request.path_params["column"]
        if task_id is None or column not in COLUMNS:
            return PlainTextResponse(f"no value here: /api/values/<a task's id>/<{' or '.join(COLUMNS)}>", 404)
        try:
            text = await self.db._engine.browse_value(task_id, column, READ_TIMEOUT)
        except DurableError as exc:  # the statement timeout, a lost database
            return PlainTextResponse(f"cannot read the value: {exc}", 503)
        if text is None:
            return PlainTextResponse(f"task {task_id} has no {column} (or there is no such task)", 404)
        return Response(text, media_type="application/json")

    async def runs_ahead(self, info: WorkflowInfo, now: datetime) -> str | None:
        """For a root due in its queue, how many due runs of that queue come
        before it (``"1000+"`` beyond ``COUNT_CAP``); None for any other run."""
        due = info.status in ("queued", "scheduled") and (info.run_at is None or info.run_at <= now)
        if info.queue is None or not due:
            return None
        n = await self.db._engine.runs_ahead(info.id, COUNT_CAP + 1, READ_TIMEOUT)
        return None if n is None else f"{COUNT_CAP}+" if n > COUNT_CAP else str(n)

    async def free_fork_name(self, name: str) -> str:
        """The first ``NAME-fork-N`` not taken, suggested for a fork of
        ``name``: a lookup by the unique name per candidate, a few at most
        (never a scan of the names that start alike)."""
        for n in range(1, FORK_NAME_TRIES + 1):
            candidate = f"{name}-fork-{n}"
            try:
                if await self.db._engine.run_info([candidate]) is None:
                    return candidate
            except DurableError:  # a suggestion only: the fork says if the name is taken
                return candidate
        return f"{name}-fork-{datetime.now(timezone.utc):%Y%m%dT%H%M%S.%fZ}"

    async def queues(self, request: Request) -> Response:
        try:
            rows = await self.db._engine.browse_queues(READ_TIMEOUT)
        except DurableError as exc:  # the statement timeout, a lost database
            return self.page("missing.html", 503, title="Cannot read the queues", message=str(exc))
        found = [QueueInfo._from(row) for row in rows]
        live = Live(True, QUEUES_EVERY)
        return self.page("queues.html", queues=found, now=datetime.now(timezone.utc), live=live)

    async def schedules(self, request: Request) -> Response:
        engine = self.db._engine
        try:
            rows = await engine.browse_schedules(READ_TIMEOUT)
            names = [name for row in rows for name in schedules.recent_names(*row[:3])]
            runs = [WorkflowInfo._from(run) for run in await engine.browse_named(names, READ_TIMEOUT)]
        except DurableError as exc:  # the statement timeout, a lost database
            return self.page("missing.html", 503, title="Cannot read the schedules", message=str(exc))
        by_name = {run.name: run for run in runs}
        now = datetime.now(timezone.utc)
        views = [schedules.view(row, by_name, now) for row in rows]
        return self.page("schedules.html", schedules=views, now=now)

    async def cancel_run(self, request: Request) -> Response:
        # A root or a child, by its path: with every unfinished workflow under it.
        path = api_path(request, "cancel")
        return await self.act(path, cancel, "it is finished already (or there is no such run)")

    async def resume_run(self, request: Request) -> Response:
        path = api_path(request, "resume")
        if len(path) != 1:
            message = f"a child workflow is resumed with its root: resume {path[0]!r}"
            return JSONResponse({"ok": False, "error": message}, 400)
        return await self.act(path[0], resume, "it is neither failed nor cancelled (or there is no such run)")

    async def pause_queue(self, request: Request) -> Response:
        return await self.act(request.path_params["name"], pause_queue)

    async def resume_queue(self, request: Request) -> Response:
        return await self.act(request.path_params["name"], resume_queue)

    async def act(self, name: Any, action: Any, refused: str = "") -> Response:
        """Does ``action(db, name)`` (a write: the guard let it through only
        with the custom header, never in read-only mode); JSON either way."""
        try:
            done = await action(self.db, name)
        except (InvalidName, ConfigError) as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, 400)
        except DurableError as exc:  # a lost database
            return JSONResponse({"ok": False, "error": str(exc)}, 503)
        if done is False:
            # A root by its name, a child by its path.
            what = repr(name[0] if isinstance(name, tuple) and len(name) == 1 else name)
            return JSONResponse({"ok": False, "error": f"cannot do that to {what}: {refused}"}, 409)
        return JSONResponse({"ok": True})
