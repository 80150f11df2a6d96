"""``durable ui`` end to end: the app served by uvicorn on a free port over the
test's schema, driven by headless Chromium (Debian's ``chromium`` through
Playwright), and plain HTTP requests for the guards."""

from __future__ import annotations

import asyncio
import html
import json
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import asyncpg
import pytest
from click.testing import CliRunner

import durable
from _waits import until
from durable import Backoff, Ctx
from durable._schedules import tick_run_name
from durable.cli import cli

pytest.importorskip("starlette", reason="durable ui needs the ui extra (starlette, jinja2, uvicorn)")
from durable import ui as web  # noqa: E402
from durable.ui import actions, pages  # noqa: E402

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = "/usr/bin/chromium"
FAST = Backoff(initial=0.01, factor=1.0, max=0.01, jitter=0.0)
HOSTILE = "<script>alert(1)</script>"
HOSTILE_TOO = "<img src=x onerror=alert(1)>"


@durable.workflow(name="ui.nightly", queue="paused")
async def nightly(ctx: Ctx, n: int) -> int:
    raise AssertionError("its queue is paused: it never runs")


@dataclass
class Served:
    """The app on 127.0.0.1:``port``."""

    port: int
    url: str


@pytest.fixture
async def serve(db: durable.Db) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    """Starts the app over ``db`` (options as ``make_app``'s) on a free port
    of 127.0.0.1; stops every app started at the end of the test."""
    servers: list[tuple[Any, asyncio.Future[None]]] = []

    async def start(**options: Any) -> Served:
        sock = web.bind("127.0.0.1", 0)
        port = sock.getsockname()[1]
        server = web.server(web.make_app(db, host="127.0.0.1", port=port, **options))
        servers.append((server, asyncio.ensure_future(server.serve(sockets=[sock]))))

        async def started() -> bool:
            return bool(server.started)

        await until(started, "the server accepts connections")
        return Served(port, f"http://127.0.0.1:{port}")

    yield start
    for server, serving in servers:
        server.should_exit = True
        await serving


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Browser]:
    """Headless Chromium: the system's, as the Makefile installs it; launched
    once for the whole run."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no {CHROMIUM}: install Debian's chromium package (make test-all does, as root with apt-get)")
    playwright_api = pytest.importorskip("playwright.async_api", reason="needs playwright (the dev group)")
    async with playwright_api.async_playwright() as playwright:
        launched: Browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def browser(chromium: Browser) -> AsyncIterator[Browser]:
    """The run's Chromium; every page and context the test opened is closed
    after it (each page has a context of its own: no cookie or storage
    outlives its test)."""
    yield chromium
    for context in chromium.contexts:
        await context.close()


async def http(
    port: int, method: str, path: str, *headers: str, host: str | None = None, body: str = ""
) -> tuple[int, str]:
    """A bare HTTP/1.1 request (any Host header); the status and the whole response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}", "Connection: close", *headers]
    if method == "POST":
        lines.append(f"Content-Length: {len(body.encode())}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n" + body).encode())
    response = (await reader.read()).decode()
    writer.close()
    await writer.wait_closed()
    return int(response.split(" ", 2)[1]), response


async def make_runs(db: durable.Db) -> asyncio.Future[durable.Json]:
    """The scenario: a completed run, a failed one with a traceback and a
    child (with a child of its own), one waiting on a message (the returned
    future is its recv), one queued behind a paused queue, and two with
    hostile names."""
    async with Ctx.start(db, "report-1", input={"day": "2026-11-25"}) as report:
        total = await report.step("sum", lambda: 3)
        await report.complete({"total": total})

    etl = await Ctx.start(db, "etl", input={"day": 1})
    await etl.step("extract", lambda: [1, 2])

    def broken() -> None:
        raise ValueError("shard 2 is corrupt")

    with pytest.raises(ValueError):
        await etl.step("transform", broken, retries=1, backoff=FAST)
    publish = await etl.child("publish", input=None)
    await publish.step("notify", lambda: "sent")
    email = await publish.child("email", input=None)
    await email.complete("queued")
    await publish.complete("ok")
    await etl.fail(ValueError("shard 2 is corrupt"))

    await durable.create_queue(db, "paused")
    await durable.pause_queue(db, "paused")
    await nightly.enqueue(db, "nightly-1", 1)

    async with Ctx.start(db, HOSTILE, input={"html": HOSTILE}) as hostile:
        await hostile.complete(HOSTILE)
    async with Ctx.start(db, HOSTILE_TOO, input={"html": HOSTILE}) as hostile:
        await hostile.step(HOSTILE, lambda: HOSTILE)
        await hostile.complete(HOSTILE)

    order = await Ctx.start(db, "order-14")  # a direct run: it waits in its process
    waiting = asyncio.ensure_future(order.recv("approval", timeout=60))

    async def shown() -> bool:
        return (await durable.get(db, "order-14")).waiting_for is not None

    await until(shown, "the wait is shown")
    return waiting


async def names_shown(page: Page) -> list[str]:
    """The names of the runs listed, in order."""
    rows = page.locator("table.runs tbody tr")
    return [str(name) for name in await rows.evaluate_all("rows => rows.map(r => r.dataset.name)")]


async def test_the_pages_show_runs_filters_from_the_url_and_a_run_with_its_tree(
    db: durable.Db, browser: Browser, serve: Callable[..., Awaitable[Served]]
) -> None:
    waiting = await make_runs(db)
    app = await serve()
    page = await browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    problems: list[str] = []
    # (Not "Failed to load resource": the 404 pages below, and /favicon.ico.)
    page.on(
        "console",
        lambda m: problems.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None,
    )
    page.on("pageerror", lambda error: problems.append(str(error)))

    # The list: every root, newest first, with its status; the tabs count.
    response = await page.goto(app.url + "/")
    assert response is not None and response.status == 200
    assert response.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
    all_names = ["order-14", HOSTILE_TOO, HOSTILE, "nightly-1", "etl", "report-1"]
    assert await names_shown(page) == all_names
    statuses = await page.locator("table.runs .status").all_inner_texts()
    assert statuses == ["running", "completed", "completed", "queued", "failed", "completed"]
    assert await page.locator('.tab[data-status="all"] .count').inner_text() == "6"
    assert await page.locator('.tab[data-status="completed"] .count').inner_text() == "3"
    assert await page.locator('.tab[data-status="failed"] .count').inner_text() == "1"
    row = page.locator('tr[data-name="nightly-1"]')
    assert "queue paused is paused" in await row.inner_text()
    assert "waiting for a message on 'approval'" in await page.locator('tr[data-name="order-14"]').inner_text()

    # The hostile names are text: shown as written, nothing ran.
    hostile_link = page.get_by_role("link", name=HOSTILE, exact=True)
    assert await hostile_link.is_visible()
    assert await page.get_by_role("link", name=HOSTILE_TOO, exact=True).is_visible()

    # A tab is a URL; filters are in the URL, and the form writes them there.
    await page.click('.tab[data-status="failed"]')
    assert page.url == app.url + "/?status=failed"
    assert await names_shown(page) == ["etl"]
    assert "ValueError: shard 2 is corrupt" in await page.locator('tr[data-name="etl"]').inner_text()
    await page.goto(app.url + "/?prefix=order")
    assert await names_shown(page) == ["order-14"]
    await page.goto(app.url + "/?queue=paused&status=queued")
    assert await names_shown(page) == ["nightly-1"]
    await page.goto(app.url + "/?" + urlencode({"input": '$.day == "2026-11-25"'}))
    assert await names_shown(page) == ["report-1"]
    await page.goto(app.url + "/?" + urlencode({"input": "$.day > 0"}))
    assert await names_shown(page) == ["etl"]
    assert await page.locator('.tab[data-status="all"] .count').inner_text() == "1"
    await page.goto(app.url + "/?" + urlencode({"input": "$.day ==="}))
    assert "syntax error" in await page.locator(".problem").inner_text()
    await page.goto(app.url + "/?workflow=ui.nightly")
    assert await names_shown(page) == ["nightly-1"]
    assert await page.locator('.tab[data-status="queued"] .count').inner_text() == "1"
    assert await page.locator('.tab[data-status="completed"] .count').inner_text() == "0"
    await page.goto(app.url + "/?since=2000-01-01T00:00:00Z&status=completed")
    assert await names_shown(page) == [HOSTILE_TOO, HOSTILE, "report-1"]
    await page.goto(app.url + "/?since=2999-01-01T00:00:00Z")
    assert await names_shown(page) == []
    assert await page.locator(".empty").inner_text() == "No runs match."
    await page.goto(app.url + "/?until=2000-01-01T00:00:00Z")
    assert await names_shown(page) == []
    await page.goto(app.url + "/?until=2999-01-01T00:00:00Z&since=2000-01-01T00:00:00Z")
    assert await names_shown(page) == all_names
    # A parent lists its child workflows, not its steps; a child's path is
    # given one name per parent= (a name is never split).
    await page.goto(app.url + "/?parent=etl")
    assert await names_shown(page) == ["publish"]
    assert await page.locator("h1").inner_text() == "Children of etl"
    assert await page.locator('.tab[data-status="all"] .count').inner_text() == "1"
    await page.goto(app.url + "/?parent=etl&parent=publish&status=completed")
    assert await names_shown(page) == ["email"]
    assert await page.locator("h1").inner_text() == "Children of etl / publish"
    await page.click('.tab[data-status="all"]')
    assert page.url == app.url + "/?parent=etl&parent=publish"
    await page.click('tr[data-name="email"] a')
    assert page.url == app.url + "/runs/etl/publish/email"
    assert await page.locator("h1").inner_text() == "email completed"
    await page.goto(app.url + "/?parent=etl/publish")
    assert await names_shown(page) == [], "the root named etl/publish: there is none"
    await page.goto(app.url + "/?parent=nope")
    assert await names_shown(page) == []
    assert await page.locator('.tab[data-status="all"] .count').inner_text() == "0"
    await page.goto(app.url + "/")
    await page.fill('input[name="prefix"]', "report")
    await page.click('button[type="submit"]')
    await page.wait_for_url(app.url + "/?prefix=report")
    assert await names_shown(page) == ["report-1"]
    await page.goto(app.url + "/?status=bogus&limit=2")
    assert "Ignored: unknown status 'bogus'" in await page.locator(".problem").inner_text()
    assert await names_shown(page) == all_names[:2]
    # Keyset pages: the next one starts below the last id shown.
    for at in (2, 4):
        await page.click("#older")
        assert "before=" in page.url and "limit=2" in page.url
        assert await names_shown(page) == all_names[at : at + 2]
    assert await page.locator("#older").count() == 0, "no page after the last"
    await page.click("#newest")
    assert await names_shown(page) == all_names[:2]
    await page.goto(app.url + "/?status=completed&limit=1")
    await page.click("#older")
    assert await names_shown(page) == [HOSTILE]

    # The detail: fields, steps with attempts, the traceback, the children as a tree.
    await page.goto(app.url + "/")
    await page.click('tr[data-name="etl"] a')
    assert page.url == app.url + "/runs/etl"
    assert await page.locator("h1").inner_text() == "etl failed"
    assert '"day": 1' in await page.locator("#input .json-view").inner_text()
    transform = page.locator('tr[data-step="transform"]')
    assert "failed" in await transform.inner_text()
    assert await transform.locator("td").nth(2).inner_text() == "2"
    traceback = await transform.locator("pre.traceback").inner_text()
    assert traceback.startswith("Traceback (most recent call last):")
    assert 'raise ValueError("shard 2 is corrupt")' in traceback
    assert await page.locator('tr[data-step="extract"] .json-copy').get_attribute("data-copy") == "[\n  1,\n  2\n]"
    tree = page.locator("#children")
    assert await tree.locator('li[data-name="publish"] > details > summary > .status').inner_text() == "completed"
    nested = tree.locator('li[data-name="publish"] li[data-name="email"]')
    assert await nested.locator("a").text_content() == "email"
    assert await nested.locator("a").get_attribute("href") == "/runs/etl/publish/email"
    await tree.get_by_role("link", name="publish", exact=True).click()
    assert page.url == app.url + "/runs/etl/publish"
    assert await page.locator("h1").inner_text() == "publish completed"
    assert '"sent"' in await page.locator('tr[data-step="notify"] .json-tree').inner_text()
    assert await page.locator(".crumbs a").all_inner_texts() == ["Runs", "etl", "publish"]

    # The waiting run: its "waiting on" card.
    await page.goto(app.url + "/runs/order-14")
    card = await page.locator("#waiting").inner_text()
    assert "waiting for a message on 'approval' (step 'approval') until " in card

    # A hostile step name, output and input on a detail page: text too.
    await page.goto(app.url + "/")
    await page.get_by_role("link", name=HOSTILE_TOO, exact=True).click()
    assert await page.locator("h1").inner_text() == f"{HOSTILE_TOO} completed"
    assert await page.locator(f'tr[data-step="{HOSTILE}"] td').first.inner_text() == HOSTILE
    assert await page.locator("#output .json-tree").inner_text() == f'"{HOSTILE}"'
    assert HOSTILE in await page.locator("#input .json-tree").inner_text()
    label = page.locator(f'svg.timeline g[data-row="{HOSTILE}"] text.tl-label')
    assert await label.evaluate("e => e.firstChild.nodeValue") == HOSTILE, "drawn as text in the timeline"
    assert await page.locator("svg.timeline script").count() == 0
    # A root whose name holds a "/": its page's URL keeps the name in one segment.
    await page.goto(app.url + "/")
    await hostile_link.click()
    assert page.url == app.url + "/runs/%3Cscript%3Ealert%281%29%3C%2Fscript%3E"
    assert await page.locator("h1").inner_text() == f"{HOSTILE} completed"
    assert await page.locator(".crumbs a").all_inner_texts() == ["Runs", HOSTILE]

    # An unknown run: 404.
    missing = await page.goto(app.url + "/runs/nope")
    assert missing is not None and missing.status == 404
    assert await page.locator(".problem").inner_text() == "there is no workflow named 'nope'"
    invalid = await page.goto(app.url + "/runs/a//b")
    assert invalid is not None and invalid.status == 404
    assert "invalid workflow name" in await page.locator(".problem").inner_text()
    assert dialogs == [], "no script of the database ran"
    assert problems == [], "no CSP violation or script error"
    await page.close()

    assert await durable.send(db, "order-14", "approval", "ok")
    assert await asyncio.wait_for(waiting, 10) == "ok"


async def test_read_only_mode_shows_a_badge_and_refuses_changes(
    db: durable.Db, serve: Callable[..., Awaitable[Served]]
) -> None:
    app = await serve(read_only=True)
    status, body = await http(app.port, "GET", "/")
    assert status == 200 and 'id="read-only"' in body
    assert (await http(app.port, "POST", "/", "X-Durable-UI: 1"))[0] == 405
    writable = await serve()
    status, body = await http(writable.port, "GET", "/")
    assert status == 200 and 'id="read-only"' not in body
    # A write needs the custom header (a form of another site cannot send it).
    status, body = await http(writable.port, "POST", "/")
    assert status == 403 and "x-durable-ui" in body


async def status_of(pg: asyncpg.Connection, name: str) -> str:
    """The root's status, read in SQL."""
    return str(await pg.fetchval("SELECT status FROM task WHERE parent_id IS NULL AND name = $1", name))


async def test_the_run_page_cancels_and_resumes_a_root(
    db: durable.Db, pg: asyncpg.Connection, browser: Browser, serve: Callable[..., Awaitable[Served]]
) -> None:
    order = await Ctx.start(db, "order-1")  # a direct run, running in this process
    await order.child("ship", input=None)
    await durable.create_queue(db, "paused")
    await durable.pause_queue(db, "paused")
    await nightly.enqueue(db, "nightly-1", 1)
    async with Ctx.start(db, "report-1") as report:
        await report.complete(1)
    app = await serve()
    page = await browser.new_page()
    dialogs: list[str] = []

    async def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)
    problems: list[str] = []
    # (Not "Failed to load resource": /favicon.ico, and a refused action below.)
    page.on(
        "console",
        lambda m: problems.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None,
    )
    page.on("pageerror", lambda error: problems.append(str(error)))

    # A running root: Cancel (after a confirmation), no Resume.
    await page.goto(app.url + "/runs/order-1")
    assert await page.locator("#resume").count() == 0
    await page.click("#cancel")
    await page.wait_for_selector("h1 .status-cancelled")
    assert dialogs == ["Cancel order-1 and every unfinished workflow under it?"]
    assert await status_of(pg, "order-1") == "cancelled"
    child = await pg.fetchval("SELECT status FROM task WHERE name = 'ship' AND kind = 'workflow'")
    assert child == "cancelled", "its children with it"
    assert await page.locator("#cancel").count() == 0
    # Resumed, a run started by hand is failed until its process starts it again.
    await page.click("#resume")
    await page.wait_for_selector("h1 .status-failed")
    assert await status_of(pg, "order-1") == "failed"

    # A registered one goes back to its queue.
    await page.goto(app.url + "/runs/nightly-1")
    assert await page.locator("h1 .status").inner_text() == "queued"
    await page.click("#cancel")
    await page.wait_for_selector("h1 .status-cancelled")
    assert await status_of(pg, "nightly-1") == "cancelled"
    await page.click("#resume")
    await page.wait_for_selector("h1 .status-queued")
    assert await status_of(pg, "nightly-1") == "queued"
    assert await page.locator("#cancel").count() == 1 and await page.locator("#resume").count() == 0

    # A finished root has neither; a child's page has Cancel, of the child
    # alone (by its path), and no Resume (it resumes with its root).
    await page.goto(app.url + "/runs/report-1")
    assert await page.locator("button[data-action]").count() == 0
    await page.goto(app.url + "/runs/order-1/ship")
    assert await page.locator("h1").inner_text() == "ship running"
    assert await page.locator("#resume").count() == 0
    assert await page.locator("#cancel").get_attribute("data-action") == "/api/runs/order-1/ship/cancel"
    await page.click("#cancel")
    await page.wait_for_selector("h1 .status-cancelled")
    assert (await durable.get(db, ("order-1", "ship"))).status == "cancelled"
    assert await status_of(pg, "order-1") == "failed", "its root is left as it was"

    # What the server refuses is said on the page: a run cancelled meanwhile.
    await page.goto(app.url + "/runs/nightly-1")
    assert await durable.cancel(db, "nightly-1")
    await page.click("#cancel")
    error = page.locator("#action-error")
    await error.wait_for()
    assert "cannot do that to 'nightly-1'" in await error.inner_text()
    assert problems == [], "no CSP violation or script error"
    await page.close()


async def test_the_queues_page_shows_counts_and_pauses_and_resumes(
    db: durable.Db, pg: asyncpg.Connection, browser: Browser, serve: Callable[..., Awaitable[Served]]
) -> None:
    await durable.create_queue(db, "paused")
    await durable.pause_queue(db, "paused")
    await nightly.enqueue(db, "nightly-1", 1)
    await nightly.enqueue(db, "nightly-2", 2)
    await durable.create_queue(
        db, "mail", concurrency=5, concurrency_per_key=1, rate_limit=(10, timedelta(minutes=1))
    )
    await durable.create_queue(db, HOSTILE)
    app = await serve()
    page = await browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    problems: list[str] = []
    # (Not "Failed to load resource": /favicon.ico, and a refused action below.)
    page.on(
        "console",
        lambda m: problems.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None,
    )
    page.on("pageerror", lambda error: problems.append(str(error)))

    await page.goto(app.url + "/")
    await page.click("#nav-queues")
    assert page.url == app.url + "/queues"
    rows = page.locator("table.queues tbody tr")
    names = await rows.evaluate_all("rows => rows.map(r => r.dataset.name)")
    assert sorted(names) == sorted(["paused", "mail", HOSTILE])
    paused = page.locator('tr[data-name="paused"]')
    assert await paused.locator(".state").inner_text() == "paused"
    assert await paused.locator(".queued").inner_text() == "2"
    assert await paused.locator(".running").inner_text() == "0"
    assert (await paused.locator(".oldest").inner_text()).endswith(" ago")
    mail = page.locator('tr[data-name="mail"]')
    assert await mail.locator(".state").inner_text() == "active"
    assert await mail.locator(".concurrency").inner_text() == "5"
    assert await mail.locator(".per-key").inner_text() == "1"
    assert await mail.locator(".rates").inner_text() == "0/10 per 1m00s"
    assert await mail.locator(".oldest").inner_text() == "—"
    # A queue's name is text, and its buttons reach it through the URL.
    hostile = page.locator("table.queues tbody tr").filter(has_text=HOSTILE)
    assert await hostile.locator("td a").inner_text() == HOSTILE

    # Resume, then pause again: the flag flips in the table.
    await paused.locator("button.resume").click()
    await page.wait_for_selector('tr[data-name="paused"] .status-active')
    assert await pg.fetchval("SELECT paused FROM task_queue WHERE name = 'paused'") is False
    await page.locator('tr[data-name="paused"] button.pause').click()
    await page.wait_for_selector('tr[data-name="paused"] .status-paused')
    assert await pg.fetchval("SELECT paused FROM task_queue WHERE name = 'paused'") is True
    await hostile.locator("button.pause").click()
    await hostile.locator(".status-paused").wait_for()
    assert await pg.fetchval("SELECT paused FROM task_queue WHERE name = $1", HOSTILE) is True
    assert dialogs == [], "no script of the database ran"
    assert problems == [], "no CSP violation or script error"
    await page.close()


async def test_the_schedules_page_says_the_cron_in_words_with_next_ticks_and_recent_runs(
    db: durable.Db, pg: asyncpg.Connection, browser: Browser, serve: Callable[..., Awaitable[Served]]
) -> None:
    # As an executor registers them: the next tick to run (a weekday at 09:00 Paris);
    # and the spec app.report had before a deploy, which no executor has served for an hour.
    next_tick = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
    await pg.execute(
        "INSERT INTO task_schedule_spec (workflow, spec, next_tick, seen_at) VALUES "
        "('app.report', 'cron 0 9 * * 1-5 Europe/Paris', $1, now()), ($2, 'every 300', $1, now()), "
        "('app.report', 'every 3600', $1, now() - interval '1 hour')",
        next_tick,
        HOSTILE,
    )
    # The run of the tick before (Monday 30 November), as an executor names it.
    ran = tick_run_name("app.report", datetime(2026, 11, 30, 8, 0, tzinfo=timezone.utc))
    async with Ctx.start(db, ran) as run:
        await run.complete(None)
    app = await serve()
    page = await browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await page.goto(app.url + "/")
    await page.click("#nav-schedules")
    card = page.locator('.schedule[data-workflow="app.report"][data-spec="cron 0 9 * * 1-5 Europe/Paris"]')
    assert await card.locator(".words").inner_text() == "At 09:00, Monday through Friday (Europe/Paris)"
    assert "seen by an executor" in await card.locator(".spec").inner_text()
    old = page.locator('.schedule[data-workflow="app.report"][data-spec="every 3600"]')
    assert await old.locator(".words").inner_text() == "every hour"
    assert "no executor serves it" in await old.locator(".spec").inner_text()
    upcoming = await card.locator(".upcoming li").all_inner_texts()
    assert [tick.split(" in ")[0] for tick in upcoming] == [
        "2026-12-01 08:00:00Z",
        "2026-12-02 08:00:00Z",
        "2026-12-03 08:00:00Z",
        "2026-12-04 08:00:00Z",
        "2026-12-07 08:00:00Z",
    ]
    recent = card.locator(".recent li")
    assert await recent.count() == 5
    assert "2026-11-30 08:00:00Z" in await recent.nth(0).inner_text()
    assert await recent.nth(0).locator(".status").inner_text() == "completed"
    assert "no run" in await recent.nth(1).inner_text(), "Friday 27 November ran nothing here"
    await recent.nth(0).locator("a").click()
    assert await page.locator("h1").inner_text() == f"{ran} completed"
    await page.goto(app.url + "/schedules")
    hostile = page.locator(".schedule").filter(has_not_text="app.report")
    assert await hostile.locator("h2").inner_text() == HOSTILE
    assert await hostile.locator(".words").inner_text() == "every 5 minutes"
    assert dialogs == []


async def test_a_schedule_this_machine_cannot_compute_is_shown_as_written(
    db: durable.Db, pg: asyncpg.Connection, serve: Callable[..., Awaitable[Served]]
) -> None:
    # Specs another version (or a machine with another tz database) may have stored.
    unreadable = [
        "every nan",
        "every inf",
        "every 0",
        "every 1e300",
        "cron * * * * * Mars/Olympus",
        "cron 0 0 30 2 * UTC",
        "cron 61 * * * * UTC",
    ]
    now = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
    for spec in unreadable:
        await pg.execute("INSERT INTO task_schedule_spec (workflow, spec, next_tick) VALUES ('app.x', $1, $2)", spec, now)
    # Ticks at the ends of time: as many as there are.
    end = datetime(9999, 12, 31, 23, 0, tzinfo=timezone.utc)
    start = datetime(1, 1, 1, 0, 1, tzinfo=timezone.utc)
    await pg.execute(
        "INSERT INTO task_schedule_spec (workflow, spec, next_tick) VALUES "
        "('app.end', 'cron 0 9 * * 1-5 UTC', $1), ('app.end', 'every 60', $1), "
        "('app.start', 'cron 0 9 * * 1-5 UTC', $2), ('app.start', 'every 60', $2)",
        end,
        start,
    )
    app = await serve()
    status, body = await http(app.port, "GET", "/schedules")
    assert status == 200, body
    for spec in unreadable:
        assert f'data-spec="{spec}">' in body and f'<p class="words">{spec}</p>' in body, spec
    assert body.count('class="card schedule"') == len(unreadable) + 4


async def live_page(browser: Browser, url: str) -> tuple[Page, list[str]]:
    """A page open at ``url``, the list of its polls (the URLs it asked for
    the version of what it shows), and a check that the page raised no error
    (a script refused by the CSP, a failing script) at the end of the test."""
    page = await browser.new_page()
    polls: list[str] = []
    page.on("request", lambda request: polls.append(request.url) if "/api/live/" in request.url else None)
    problems: list[str] = []
    # (Not "Failed to load resource": the responses say which, below.)
    page.on(
        "console",
        lambda m: problems.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None,
    )
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "response",
        lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 and "favicon" not in r.url else None,
    )
    await page.goto(url)
    pages_problems[page] = problems
    return page, polls


#: Per page opened by ``live_page``, its console errors (checked by ``no_problems``).
pages_problems: dict[Any, list[str]] = {}


def no_problems(page: Page, *expected: str) -> None:
    assert pages_problems.pop(page) == list(expected)


async def until_polls(polls: list[str], more: int) -> None:
    """Waits until the page that fills ``polls`` has polled ``more`` times
    more: a clock that proves a poll was due (no timer of the test's own)."""
    enough = len(polls) + more

    async def polled() -> bool:
        return len(polls) >= enough

    await until(polled, f"{more} more polls")


async def indicator(page: Page) -> str:
    return str(await page.text_content("#live-indicator"))


async def test_the_versions_the_live_pages_poll_change_with_what_they_show(
    db: durable.Db, serve: Callable[..., Awaitable[Served]]
) -> None:
    old = await Ctx.start(db, "old-1")
    async with Ctx.start(db, "new-1") as new:
        await new.complete(1)
    order = await Ctx.start(db, "order-1")
    app = await serve()

    async def version(path: str) -> Any:
        status, response = await http(app.port, "GET", path)
        assert status == 200, response
        return json.loads(response.split("\r\n\r\n", 1)[1])["version"]

    run = await version("/api/live/runs/order-1")
    assert isinstance(run, str) and run == await version("/api/live/runs/order-1")
    completed = await version("/api/live/runs?status=completed")
    await order.step("pack", lambda: 1)
    assert await version("/api/live/runs/order-1") != run, "a new step"
    assert await version("/api/live/runs?status=completed") == completed, "nothing it shows changed"
    # An older run that enters the tab below its newest: the newest id alone would miss it.
    await old.complete(1)
    assert await version("/api/live/runs?status=completed") != completed
    assert await version("/api/live/runs/nope") is None
    status, response = await http(app.port, "GET", "/api/live/runs/a//b")
    assert status == 404 and "it is empty" in response, response


async def test_a_run_that_finishes_while_its_page_is_open_is_shown_finished_without_a_reload(
    db: durable.Db, browser: Browser, serve: Callable[..., Awaitable[Served]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "LIVE_EVERY", 0.05)
    order = await Ctx.start(db, "order-1")  # a direct run, driven by this test

    def broken() -> None:
        raise ValueError("the carrier is down")

    with pytest.raises(ValueError):
        await order.step("book", broken, retries=0)
    app = await serve()
    page, polls = await live_page(browser, app.url + "/runs/order-1")
    await page.evaluate("window.marker = 'same page'")
    assert (await indicator(page)).startswith("live · updated ")
    assert await page.text_content("#live-status") == "running"
    # The user opened the failed step's error record: it stays open.
    await page.click('tr[data-step="book"] details.error-record summary')

    await order.step("pack", lambda: "boxed")
    await page.wait_for_selector('tr[data-step="pack"] .status-completed')
    assert await page.locator('tr[data-step="book"] details.error-record').get_attribute("open") is not None
    await order.complete({"shipped": True})
    await page.wait_for_selector("#live-status.status-completed")
    assert await page.get_attribute("#output .json-copy", "data-copy") == '{\n  "shipped": true\n}'
    assert await page.locator("#cancel").count() == 0, "the actions follow the status"
    assert await page.locator('tr[data-step="book"] details.error-record').get_attribute("open") is not None
    assert await page.evaluate("window.marker") == "same page", "updated in place, not reloaded"
    assert await indicator(page) == "up to date · nothing running"
    # A finished run changes no more: the polls stop.
    assert polls and all(url.endswith("/api/live/runs/order-1") for url in polls)
    seen = len(polls)
    clock, ticks = await live_page(browser, app.url + "/")  # the list polls on: a clock
    await until_polls(ticks, 3)
    assert len(polls) == seen
    no_problems(page)
    no_problems(clock)


async def test_a_region_being_typed_in_is_not_replaced(
    db: durable.Db, browser: Browser, serve: Callable[..., Awaitable[Served]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "LIVE_EVERY", 0.05)
    order = await Ctx.start(db, "order-1")
    app = await serve()
    page, _ = await live_page(browser, app.url + "/runs/order-1")
    # A field in a live region (as an action's form would be), typed in.
    await page.evaluate("document.getElementById('live-actions').insertAdjacentHTML('beforeend', '<input id=note>')")
    await page.fill("#note", "half a sentence")
    await order.complete(1)
    await page.wait_for_selector("#live-status.status-completed")
    assert await page.input_value("#note") == "half a sentence"
    assert await page.locator("#cancel").count() == 1, "its region was kept as it was"
    no_problems(page)


async def test_the_runs_list_shows_new_runs_and_changes_live(
    db: durable.Db, browser: Browser, serve: Callable[..., Awaitable[Served]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "LIVE_EVERY", 0.05)
    monkeypatch.setattr(pages, "COUNT_TTL", 0.0)
    async with Ctx.start(db, "report-1") as report:
        await report.complete(1)
    app = await serve()
    page, polls = await live_page(browser, app.url + "/?prefix=order")
    await page.evaluate("window.marker = 'same page'")
    assert await page.locator("table.runs").count() == 0
    order = await Ctx.start(db, "order-1")
    await page.wait_for_selector('tr[data-name="order-1"] .status-running')
    assert await page.text_content('.tab[data-status="running"] .count') == "1"
    await order.complete(1)
    await page.wait_for_selector('tr[data-name="order-1"] .status-completed')
    assert await page.text_content('.tab[data-status="completed"] .count') == "1"
    assert await page.evaluate("window.marker") == "same page"
    # The polls carry the page's filters.
    assert polls and all(url.endswith("/api/live/runs?prefix=order") for url in polls)
    no_problems(page)


async def test_a_frozen_page_does_not_change_until_live_again(
    db: durable.Db, browser: Browser, serve: Callable[..., Awaitable[Served]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "LIVE_EVERY", 0.05)
    order = await Ctx.start(db, "order-1")
    app = await serve()
    page, polls = await live_page(browser, app.url + "/runs/order-1")
    await page.click("#live-toggle")
    assert await indicator(page) == "frozen"
    assert await page.text_content("#live-toggle") == "Live"
    await page.reload()  # the choice is kept for the tab
    assert await indicator(page) == "frozen"
    seen = len(polls)
    await order.complete(1)
    clock, ticks = await live_page(browser, app.url + "/")
    await until_polls(ticks, 3)  # a poll of the frozen page was due meanwhile
    assert len(polls) == seen, "a frozen page does not poll"
    assert await page.text_content("#live-status") == "running"
    await page.click("#live-toggle")
    await page.wait_for_selector("#live-status.status-completed")
    assert await page.text_content("#live-toggle") == "Freeze"
    no_problems(page)
    no_problems(clock)


async def test_a_hidden_tab_does_not_poll(
    db: durable.Db, browser: Browser, serve: Callable[..., Awaitable[Served]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "LIVE_EVERY", 0.05)
    order = await Ctx.start(db, "order-1")
    app = await serve()
    page, polls = await live_page(browser, app.url + "/runs/order-1")
    hide = """hidden => {
        Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
        Object.defineProperty(document, "visibilityState", {
            configurable: true, get: () => (hidden ? "hidden" : "visible") });
        document.dispatchEvent(new Event("visibilitychange"));
    }"""
    await page.evaluate(hide, True)
    assert await indicator(page) == "paused (tab hidden)"
    seen = len(polls)
    await order.complete(1)
    clock, ticks = await live_page(browser, app.url + "/")
    await until_polls(ticks, 3)
    assert len(polls) == seen, "a hidden tab does not poll"
    assert await page.text_content("#live-status") == "running"
    await page.evaluate(hide, False)  # shown again: it catches up at once
    await page.wait_for_selector("#live-status.status-completed")
    no_problems(page)
    no_problems(clock)


async def test_the_theme_follows_the_system_or_the_choice_kept_across_reloads(
    db: durable.Db, browser: Browser, serve: Callable[..., Awaitable[Served]]
) -> None:
    app = await serve()
    page, _ = await live_page(browser, app.url + "/queues")

    async def background() -> str:
        return str(await page.evaluate("getComputedStyle(document.body).backgroundColor"))

    async def theme() -> str | None:
        return await page.evaluate("document.documentElement.dataset.theme ?? null")  # type: ignore[no-any-return]

    light, dark = "rgb(255, 255, 255)", "rgb(20, 24, 29)"
    await page.emulate_media(color_scheme="light")
    assert (await theme(), await background()) == (None, light)
    await page.emulate_media(color_scheme="dark")
    assert (await theme(), await background()) == (None, dark)
    assert await page.text_content("#theme-toggle") == "Theme: auto"

    await page.click("#theme-toggle")
    assert (await theme(), await background()) == ("light", light), "the choice over the system's"
    await page.click("#theme-toggle")
    await page.emulate_media(color_scheme="light")
    assert (await theme(), await background()) == ("dark", dark)
    await page.reload()
    assert (await theme(), await background()) == ("dark", dark), "kept across reloads"
    assert await page.text_content("#theme-toggle") == "Theme: dark"
    await page.goto(app.url + "/runs/nope")  # every page, the missing one too
    assert (await theme(), await background()) == ("dark", dark)
    await page.click("#theme-toggle")
    assert (await theme(), await background()) == (None, light), "auto: the system's again"
    no_problems(page, f"404 {app.url}/runs/nope")


async def test_with_a_token_the_actions_carry_its_cookie(
    db: durable.Db, pg: asyncpg.Connection, browser: Browser, serve: Callable[..., Awaitable[Served]]
) -> None:
    await Ctx.start(db, "order-1")
    await durable.create_queue(db, "mail")
    app = await serve(token="s3cret")
    page = await browser.new_page()
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.goto(app.url + "/runs/order-1?token=s3cret")
    assert page.url == app.url + "/runs/order-1", "the token left the URL for its cookie"
    await page.click("#cancel")
    await page.wait_for_selector("h1 .status-cancelled")
    assert await status_of(pg, "order-1") == "cancelled"
    await page.click("#nav-queues")
    await page.locator('tr[data-name="mail"] button.pause').click()
    await page.wait_for_selector('tr[data-name="mail"] .status-paused')
    assert await pg.fetchval("SELECT paused FROM task_queue WHERE name = 'mail'") is True
    await page.close()


async def test_read_only_mode_has_no_actions(
    db: durable.Db, pg: asyncpg.Connection, serve: Callable[..., Awaitable[Served]]
) -> None:
    await Ctx.start(db, "order-1")
    async with Ctx.start(db, "etl") as etl:
        await etl.fail(ValueError("no"))
    await durable.create_queue(db, "mail")
    app = await serve(read_only=True)
    for path in ("/runs/order-1", "/runs/etl", "/queues"):
        status, body = await http(app.port, "GET", path)
        # (The header's buttons, Freeze and Theme, change only the view; so do
        # the JSON viewer's copy buttons: every other button is an action.)
        actions = re.findall(r'<button (?!type="button" class="json-copy")', body.split("<main>")[1])
        assert status == 200 and "data-action" not in body and not actions, path
    status, body = await http(app.port, "GET", "/queues")
    assert 'data-name="mail"' in body
    for path in ("/api/runs/order-1/cancel", "/api/runs/etl/resume", "/api/queues/mail/pause"):
        assert (await http(app.port, "POST", path, "X-Durable-UI: 1"))[0] == 405, path
    assert await status_of(pg, "order-1") == "running"
    assert await status_of(pg, "etl") == "failed"
    assert await pg.fetchval("SELECT paused FROM task_queue WHERE name = 'mail'") is False

    writable = await serve()
    status, body = await http(writable.port, "GET", "/runs/order-1")
    assert 'id="cancel"' in body
    # Without the custom header (another site's form): refused, nothing done.
    status, body = await http(writable.port, "POST", "/api/runs/order-1/cancel")
    assert status == 403 and "x-durable-ui" in body
    status, body = await http(writable.port, "POST", "/api/queues/mail/pause", "Origin: http://evil.example")
    assert status == 403
    assert await status_of(pg, "order-1") == "running"
    # A GET changes nothing either; what cannot be done answers 409 or 400, as JSON.
    assert (await http(writable.port, "GET", "/api/runs/order-1/cancel"))[0] == 405
    status, body = await http(writable.port, "POST", "/api/runs/nope/cancel", "X-Durable-UI: 1")
    assert status == 409 and '"ok":false' in body
    status, body = await http(writable.port, "POST", "/api/runs/order-1/resume", "X-Durable-UI: 1")
    assert status == 409 and "neither failed nor cancelled" in body
    for path in ("/api/queues//pause", "/api/queues/" + "q" * 300 + "/pause"):
        status, body = await http(writable.port, "POST", path, "X-Durable-UI: 1")
        assert status == 400 and '"ok":false' in body, (path, body)
    status, body = await http(writable.port, "POST", "/api/runs/order-1/cancel", "X-Durable-UI: 1")
    assert status == 200 and '{"ok":true}' in body
    assert await status_of(pg, "order-1") == "cancelled"


async def test_the_host_and_origin_headers_are_checked(db: durable.Db, serve: Callable[..., Awaitable[Served]]) -> None:
    app = await serve()
    for host in ("127.0.0.1", "localhost", "[::1]"):
        assert (await http(app.port, "GET", "/", host=f"{host}:{app.port}"))[0] == 200
    # DNS rebinding: a page of evil.example whose name now points here.
    status, body = await http(app.port, "GET", "/", host=f"evil.example:{app.port}")
    assert status == 421 and "unknown Host header" in body
    assert (await http(app.port, "GET", "/static/app.js", host="evil.example"))[0] == 421
    assert (await http(app.port, "GET", "/", host=f"127.0.0.1:{app.port + 1}"))[0] == 421
    status, body = await http(app.port, "GET", "/", "Origin: http://evil.example")
    assert status == 403
    assert (await http(app.port, "GET", "/", "Origin: null"))[0] == 403
    assert "content-security-policy: default-src 'none'" in body.lower()
    assert (await http(app.port, "GET", "/", f"Origin: http://127.0.0.1:{app.port}"))[0] == 200


async def test_a_token_is_taken_from_the_url_into_a_cookie(
    db: durable.Db, serve: Callable[..., Awaitable[Served]]
) -> None:
    app = await serve(token="s3cret")
    status, body = await http(app.port, "GET", "/")
    assert status == 401 and "a token is needed" in body
    assert (await http(app.port, "GET", "/?token=wrong"))[0] == 401
    status, body = await http(app.port, "GET", "/?status=failed&token=s3cret")
    assert status == 303
    headers = body.lower()
    assert "location: /?status=failed\r\n" in headers, "the token leaves the URL"
    assert "set-cookie: durable_ui_token=s3cret;" in headers and "httponly" in headers and "samesite=strict" in headers
    assert (await http(app.port, "GET", "/", "Cookie: durable_ui_token=s3cret"))[0] == 200
    assert (await http(app.port, "GET", "/", "Cookie: durable_ui_token=wrong"))[0] == 401
    # A name's escaped slash stays escaped (/runs/a%2Fb is the root named a/b).
    status, body = await http(app.port, "GET", "/runs/a%2Fb?token=s3cret")
    assert status == 303 and location_of(body) == "/runs/a%2Fb"


async def test_the_token_redirects_only_to_a_path_of_the_ui(
    db: durable.Db, serve: Callable[..., Awaitable[Served]]
) -> None:
    app = await serve(token="s3cret")
    # A browser reads each Location on the left as the other host's URL.
    for path, location in [
        ("//evil.example/x", "/evil.example/x"),
        ("///evil.example/x", "/evil.example/x"),
        ("/\\evil.example/x", "/%5Cevil.example/x"),
        ("//\\evil.example", "/%5Cevil.example"),
        ("/%09/evil.example", "/%09/evil.example"),
    ]:
        status, body = await http(app.port, "GET", f"{path}?token=s3cret")
        assert status == 303 and location_of(body) == location, (path, body)


def location_of(response: str) -> str:
    found = re.search(r"(?im)^location: (.*)\r$", response)
    assert found is not None, response
    return found.group(1)


async def test_filters_it_cannot_use_are_ignored_and_said(
    db: durable.Db, serve: Callable[..., Awaitable[Served]]
) -> None:
    app = await serve()
    bad = [
        ("status", "bogus", "unknown status &#39;bogus&#39;"),
        ("before", str(2**70), "before must be a run&#39;s id"),
        ("since", "yesterday", "is neither a duration"),
        ("since", "99999999999w", "Ignored: "),
        ("limit", "0", "limit must be a number from 1 to 1000"),
        ("workflow", "a\x00b", "workflow cannot hold a NUL character"),
    ]
    for name, value, said in bad:
        status, body = await http(app.port, "GET", "/?" + urlencode({name: value}))
        assert status == 200 and said in body, (name, value, body)


async def test_a_filter_name_not_understood_is_said_and_refuses_a_bulk_action(
    db: durable.Db, pg: asyncpg.Connection, browser: Browser, serve: Callable[..., Awaitable[Served]]
) -> None:
    await Ctx.start(db, "order-1")  # running: a bulk cancel would take it
    app = await serve()
    names = [
        ("stauts=failed", "Ignored: unknown filter &#39;stauts&#39; (did you mean &#39;status&#39;?)"),
        ("name=order-1", "Ignored: unknown filter &#39;name&#39; (the filters are status, workflow, queue,"),
        # The last of two would be read: an empty one, no filter at all.
        ("status=failed&status=", "Ignored: filter &#39;status&#39; is given 2 times: give it once"),
    ]
    for query, shown in names:
        status, body = await http(app.port, "GET", "/?" + query)
        assert status == 200 and shown in body, (query, body)
        status, body = await http(app.port, "GET", "/api/bulk/cancel/preview?" + query)
        assert status == 400 and "the filters are not all understood" in body, (query, body)
        status, body = await http(app.port, "POST", f"/api/bulk/cancel?{query}&upto=1000", "X-Durable-UI: 1")
        assert status == 400 and "the filters are not all understood" in body, (query, body)
    # A parent's path is given once per name: not twice.
    status, body = await http(app.port, "GET", "/?parent=order-1&parent=ship")
    assert status == 200 and "Ignored" not in body
    # The action's own parameter is not a filter of the page.
    status, body = await http(app.port, "GET", "/?upto=1000")
    assert "Ignored: unknown filter &#39;upto&#39;" in body
    status, body = await http(app.port, "GET", "/api/bulk/cancel/preview?upto=1000")
    assert status == 400 and "unknown filter" in body

    # In the browser: the bulk button says why it does nothing, and asks nothing.
    page = await browser.new_page()
    problems = watch(page)
    page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    await page.goto(app.url + "/?stauts=failed")
    assert "Ignored: unknown filter 'stauts'" in await page.locator("p.problem").inner_text()
    await page.click('button[data-bulk="cancel"]')
    said = page.locator("#bulk-said.problem")
    await said.wait_for()
    assert (await said.inner_text()).startswith("the filters are not all understood: unknown filter 'stauts'")
    await page.close()
    assert problems == [], "no confirmation was asked"
    assert await status_of(pg, "order-1") == "running"


async def test_an_input_out_of_bounds_is_refused_with_400_never_500(
    db: durable.Db, pg: asyncpg.Connection, serve: Callable[..., Awaitable[Served]]
) -> None:
    await Ctx.start(db, "order-1")
    app = await serve()
    deep = "[" * 100_000 + "]" * 100_000
    surrogate = '"\\ud800"'  # JSON's escape of a lone surrogate: valid JSON, not text
    writes = [
        ("/api/bulk/cancel?upto=" + "9" * 21, "", "upto must be a run's id"),
        ("/api/bulk/cancel?upto=-" + "9" * 21, "", "upto must be a run's id"),
        ("/api/start", json.dumps({"workflow": "w", "delay": "99999999999d"}), "longer than a duration can be"),
        ("/api/start", json.dumps({"workflow": "w", "run_at": "9999-12-31T23:00:00-05:00"}), "within the years 1 to 9999"),
        ("/api/start", json.dumps({"workflow": "w", "priority": "9" * 30}), "priority must be an int"),
        ("/api/start", json.dumps({"workflow": "w", "input": deep}), "the input is nested too deep"),
        ("/api/runs/order-1/send", json.dumps({"topic": "t", "value": deep}), "the value is nested too deep"),
        ("/api/runs/order-1/fork", json.dumps({"new_name": "o", "input": deep}), "the input is nested too deep"),
        ("/api/start", deep, "a JSON object of the form"),
        ("/api/start", '{"workflow": ' + surrogate + "}", "the field 'workflow' holds a lone surrogate"),
        ("/api/start", '{"workflow": "w", "name": ' + surrogate + "}", "the field 'name' holds a lone surrogate"),
        ("/api/runs/order-1/send", '{"topic": ' + surrogate + ', "value": "1"}', "holds a lone surrogate"),
        ("/api/runs/order-1/send", '{"topic": "t", "value": "1", "key": ' + surrogate + "}", "holds a lone surrogate"),
        ("/api/runs/order-1/fork", '{"new_name": ' + surrogate + "}", "holds a lone surrogate"),
        ("/api/runs/order-1/send", "{" + surrogate + ': "1"}', "the field '\\ud800' holds a lone surrogate"),
    ]
    for path, body, said in writes:
        status, answer = await http(app.port, "POST", path, "X-Durable-UI: 1", body=body)
        assert status == 400 and said in error_of(answer), (path, body[:60], answer)
    # A predicate Postgres cannot use, a parent that is not a path: the page says
    # which filter, 400 (not 503, which says the database failed).
    for query, said in [
        ({"input": "$$$"}, "input &#39;$$$&#39; is not a JSON path predicate Postgres can use: "),
        ({"input": " "}, "input &#39; &#39; is not a JSON path predicate Postgres can use: "),
        ({"parent": "a" * 256}, f"parent &#39;{'a' * 256}&#39; is not a run&#39;s path: "),
    ]:
        status, body = await http(app.port, "GET", "/?" + urlencode(query))
        assert status == 400 and "Cannot use the filters" in body and said in body, (query, body)
        status, body = await http(app.port, "GET", "/api/live/runs?" + urlencode(query))
        assert status == 400 and html.unescape(said) in error_of(body), body
    for path in ("/api/bulk/cancel/preview?input=%24%24%24", "/api/bulk/cancel?input=%24%24%24&upto=1000"):
        method = "GET" if "preview" in path else "POST"
        status, body = await http(app.port, method, path, "X-Durable-UI: 1")
        assert status == 400 and "is not a JSON path predicate Postgres can use" in body, body
    assert await status_of(pg, "order-1") == "running"
    assert await pg.fetchval("SELECT count(*) FROM task WHERE parent_id IS NULL") == 1


def error_of(response: str) -> str:
    """The error of a JSON answer (``{"error": ...}``)."""
    return str(json.loads(response.split("\r\n\r\n", 1)[1])["error"])


async def test_a_queued_runs_card_says_how_many_due_runs_are_ahead_of_it(
    db: durable.Db, serve: Callable[..., Awaitable[Served]]
) -> None:
    await durable.create_queue(db, "paused")
    await durable.pause_queue(db, "paused")
    for n in range(3):
        await nightly.enqueue(db, f"nightly-{n}", n)
    await nightly.enqueue(db, "urgent", 9, priority=5)  # claimed first
    await nightly.enqueue(db, "later", 9, delay=3600)  # not due: no place yet
    app = await serve()
    for name, ahead in [("urgent", "0 due runs"), ("nightly-0", "1 due run"), ("nightly-2", "3 due runs")]:
        status, body = await http(app.port, "GET", f"/runs/{name}")
        assert status == 200 and f'<p id="ahead">{ahead} ahead of it in queue paused' in body, (name, body)
    for name in ("later", "report"):
        if name == "report":
            async with Ctx.start(db, "report") as ctx:
                await ctx.complete(1)
        status, body = await http(app.port, "GET", f"/runs/{name}")
        assert status == 200 and 'id="ahead"' not in body, name


async def test_beyond_the_counted_the_total_is_the_planners_estimate(
    db: durable.Db, pg: asyncpg.Connection, serve: Callable[..., Awaitable[Served]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(12):
        async with Ctx.start(db, f"report-{n}") as ctx:
            await ctx.complete(n)
    monkeypatch.setattr(pages, "COUNT_CAP", 10)
    app = await serve()
    status, body = await http(app.port, "GET", "/")
    assert status == 200 and ">10+</span>" in body
    assert 'id="estimate"' not in body, "never analyzed: no estimate"
    await pg.execute("ANALYZE task")
    status, body = await http(app.port, "GET", "/?status=completed")
    assert 'id="estimate"' not in body, "the counts (and estimate) are kept for COUNT_TTL"
    monkeypatch.setattr(pages, "COUNT_TTL", 0.0)
    status, body = await http(app.port, "GET", "/")
    assert "≈ 12 runs in all" in body, body
    status, body = await http(app.port, "GET", "/?prefix=report")
    assert ">10+</span>" in body and 'id="estimate"' not in body, "an estimate of all, not of the filtered"
    assert pages.about(1_234_567) == "1.2M" and pages.about(34_567) == "34k" and pages.about(980) == "980"


async def test_reads_have_a_statement_timeout(
    db: durable.Db, pg: asyncpg.Connection, serve: Callable[..., Awaitable[Served]], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Ctx.start(db, "report-1") as ctx:
        await ctx.complete(1)
    monkeypatch.setattr(pages, "READ_TIMEOUT", 0.2)
    app = await serve()
    async with pg.transaction():
        await pg.execute("LOCK TABLE task IN ACCESS EXCLUSIVE MODE")
        status, body = await http(app.port, "GET", "/")
        assert status == 503, body
        assert "canceling statement due to statement timeout" in body
        status, body = await http(app.port, "GET", "/runs/report-1")
        assert status == 503 and "Cannot read the run" in body
        assert "canceling statement due to statement timeout" in body
        for poll in ("/api/live/runs", "/api/live/runs/report-1"):  # what the live pages poll
            status, body = await http(app.port, "GET", poll)
            assert status == 503 and "canceling statement due to statement timeout" in body, poll
    assert (await http(app.port, "GET", "/"))[0] == 200
    assert (await http(app.port, "GET", "/runs/report-1"))[0] == 200


def test_the_command_refuses_another_address_without_a_token_or_read_only() -> None:
    result = CliRunner().invoke(cli, ["--dsn", "postgresql://nobody@127.0.0.1:1/none", "ui", "--host", "0.0.0.0"])
    assert result.exit_code == 2, result.output
    assert "--host 0.0.0.0 is reachable from other machines: add --token" in result.stderr
    assert "Traceback" not in result.output


def test_without_the_ui_extra_the_command_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "durable.ui")
    monkeypatch.delattr(durable, "ui")
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = CliRunner().invoke(cli, ["--dsn", "postgresql://nobody@127.0.0.1:1/none", "ui"])
    assert result.exit_code == 1, result.output
    assert "durable ui needs the ui extra: pip install 'durable-pg[ui]' (uvicorn is missing)" in result.stderr


async def test_the_command_serves_until_interrupted(db: durable.Db, dsn: str, schema: str) -> None:
    async with Ctx.start(db, "report-1") as ctx:
        await ctx.complete(1)
    process = await asyncio.create_subprocess_exec(
        # As the issue writes it: `durable ui --dsn ...` (it wins over the global one).
        sys.executable, "-m", "durable", "--dsn", "postgresql://nobody@127.0.0.1:1/none", "--schema", schema,
        "ui", "--dsn", dsn, "--port", "0", "--token",
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        assert line.startswith("durable ui: http://127.0.0.1:"), line
        url = line.split(": ", 1)[1].strip()
        port = int(url.split(":")[2].split("/")[0])
        token = url.split("?token=")[1]
        assert (await http(port, "GET", "/"))[0] == 401, "a token was asked for"
        status, body = await http(port, "GET", f"/?token={token}")
        assert status == 303
        status, body = await http(port, "GET", "/", f"Cookie: durable_ui_token={token}")
        assert status == 200 and 'data-name="report-1"' in body
    finally:
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 30) == 0


def test_the_command_says_when_the_port_is_taken() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(cli, ["--dsn", "postgresql://nobody@127.0.0.1:1/none", "ui", "--port", port])
        assert result.exit_code == 1, result.output
        assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    finally:
        taken.close()


def test_the_static_files_and_templates_are_in_the_package() -> None:
    package = Path(web.__file__).parent
    static = {"app.css", "app.js", "actions.css", "actions.js", "live.js", "theme.js", "timeline.css", "json.js"}
    assert {p.name for p in (package / "static").iterdir()} >= static
    templates = {p.name for p in (package / "templates").iterdir()}
    assert templates >= {"base.html", "runs.html", "run.html", "missing.html", "queues.html", "schedules.html"}
    assert templates >= {"start.html", "run_actions.html"}


def test_the_hosts_a_browser_may_name() -> None:
    from durable.ui.security import allowed_hosts

    loopback = {"127.0.0.1", "localhost", "[::1]"}
    assert allowed_hosts("127.0.0.1", 8765) == frozenset(f"{name}:8765" for name in loopback)
    assert allowed_hosts("127.0.0.1", 80) == frozenset({f"{name}:80" for name in loopback} | loopback)
    assert allowed_hosts("10.0.0.5", 9000) == frozenset({"10.0.0.5:9000"}), "another address: its own name only"
    assert allowed_hosts("0.0.0.0", 9000) is None, "a wildcard bind cannot know its names (the token guards it)"


# The actions of issue 11 beyond cancel and resume: send, start, fork, bulk.

ran: list[str] = []


@durable.workflow(name="ui.greet", queue="ui-start")
async def greet(ctx: Ctx, who: str) -> str:
    return await ctx.step("greet", lambda: f"hello {who}")


@durable.workflow(name="ui.pipeline", queue="ui-fork")
async def pipeline(ctx: Ctx, n: int) -> list[int]:
    async def work(step: str, value: int) -> int:
        ran.append(step)
        return value

    first = await ctx.step("first", lambda: work("first", n))
    second = await ctx.step("second", lambda: work("second", n * 10))
    return [first, second]


@pytest.fixture
async def executor(db: durable.Db, pg: asyncpg.Connection) -> AsyncIterator[durable.Executor]:
    """An executor of ``greet`` and ``pipeline``, registered (its functions known)."""
    made = durable.Executor(db, [greet, pipeline], concurrency=5)
    task = asyncio.ensure_future(made.run())

    async def registered() -> bool:
        return bool(await pg.fetchval("SELECT count(*) FROM executor WHERE 'ui.greet' = ANY(workflows)"))

    await until(registered, "the executor says which functions it runs")
    yield made
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def watch(page: Page) -> list[str]:
    """Collects the page's script errors and CSP violations (and any dialog)."""
    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None,
    )
    page.on("pageerror", lambda error: problems.append(str(error)))
    return problems


async def test_the_run_page_sends_a_message(
    db: durable.Db, browser: Browser, serve: Callable[..., Awaitable[Served]]
) -> None:
    order = await Ctx.start(db, "order-1")
    child = await order.child("ship", input=None)
    async with Ctx.start(db, HOSTILE_TOO) as hostile:
        await hostile.complete(None)
    app = await serve()
    page = await browser.new_page()
    problems = watch(page)
    page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    form = page.locator("#send-form")
    said = form.locator("output.said")

    async def send(topic: str, value: str, key: str = "") -> str:
        await form.locator('input[name="topic"]').fill(topic)
        await form.locator('textarea[name="value"]').fill(value)
        await form.locator('input[name="key"]').fill(key)
        await form.locator('button[type="submit"]').click()
        await page.wait_for_function("o => o.textContent !== '…' && o.textContent !== ''", arg=await said.element_handle())
        return await said.inner_text()

    await page.goto(app.url + "/runs/order-1")
    await page.click("#send summary")
    assert await send("approval", '{"ok": tru}') == (
        'the value is not valid JSON: Expecting value at line 1, column 8 (text needs quotes: "ok")'
    )
    assert "problem" in (await said.get_attribute("class") or "")
    assert (await send("approval", "null")).startswith("null cannot be sent")
    assert await send("approval", '{"ok": true}', key="k-1") == "sent"
    assert "problem" not in (await said.get_attribute("class") or "")
    assert await send("approval", '"again"', key="k-1") == "already sent with that key ('k-1'): nothing sent again"
    assert await order.recv("approval", timeout=10) == {"ok": True}
    assert await order.recv("approval", timeout=0) is None, "the duplicate key added nothing"

    # A child gets its own, by its path.
    await page.goto(app.url + "/runs/order-1/ship")
    await page.click("#send summary")
    assert await send("step", "[1, 2]") == "sent"
    assert await child.recv("step", timeout=10) == [1, 2]
    # A hostile name reaches the server through the URL, as written.
    await page.goto(app.url + "/")
    await page.get_by_role("link", name=HOSTILE_TOO, exact=True).click()
    await page.click("#send summary")
    assert await send("t", "1") == "sent"
    assert problems == [], "no CSP violation, script error or dialog"
    await page.close()

    status, body = await http(
        app.port, "POST", "/api/runs/nope/send", "X-Durable-UI: 1", body='{"topic": "t", "value": "1"}'
    )
    assert status == 404 and "there is no workflow named 'nope'" in body
    status, body = await http(app.port, "POST", "/api/runs/nope/send", "X-Durable-UI: 1", body="[1]")
    assert status == 400 and "a JSON object" in body


async def test_a_name_is_one_segment_and_a_child_is_reached_by_its_path(
    db: durable.Db, browser: Browser, serve: Callable[..., Awaitable[Served]]
) -> None:
    parent = await Ctx.start(db, "a")
    child = await parent.child("b")
    root = await Ctx.start(db, "a/b")
    r = await Ctx.start(db, "r")
    slashed = await r.child("x/y")
    app = await serve()
    page = await browser.new_page()
    problems = watch(page)
    form = page.locator("#send-form")

    async def send_from_the_page(topic: str) -> str:
        await page.click("#send summary")
        await form.locator('input[name="topic"]').fill(topic)
        await form.locator('textarea[name="value"]').fill('"hi"')
        await form.locator('button[type="submit"]').click()
        return await said_in(page, "#send-form")

    # The root named a/b: its page, and its "Send a message", reach it and not the child b of a.
    await page.goto(app.url + "/")
    await page.get_by_role("link", name="a/b", exact=True).click()
    assert page.url == app.url + "/runs/a%2Fb"
    assert await page.locator("h1").inner_text() == "a/b running"
    assert await send_from_the_page("to-root") == "sent"
    assert await root.recv("to-root", timeout=10) == "hi"
    assert await child.recv("to-root", timeout=0) is None
    # The child b of a: its own page.
    await page.goto(app.url + "/runs/a")
    await page.locator("#children").get_by_role("link", name="b", exact=True).click()
    assert page.url == app.url + "/runs/a/b"
    assert await page.locator("h1").inner_text() == "b running"
    assert await send_from_the_page("to-child") == "sent"
    assert await child.recv("to-child", timeout=10) == "hi"
    assert await root.recv("to-child", timeout=0) is None

    # A child whose name holds a "/": its link keeps the name in one segment.
    await page.goto(app.url + "/runs/r")
    link = page.locator("#children").get_by_role("link", name="x/y", exact=True)
    assert await link.get_attribute("href") == "/runs/r/x%2Fy"
    await link.click()
    assert await page.locator("h1").inner_text() == "x/y running"
    assert await page.locator(".crumbs a").all_inner_texts() == ["Runs", "r", "x/y"]
    assert await send_from_the_page("t") == "sent"
    assert await slashed.recv("t", timeout=10) == "hi"
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click("#cancel")
    await page.wait_for_selector("h1 .status-cancelled")
    assert slashed.status == "cancelled" and r.status == "running", "the child alone"
    await page.goto(app.url + "/?parent=r")
    assert await names_shown(page) == ["x/y"]
    await page.click('tr[data-name="x/y"] a')
    assert page.url == app.url + "/runs/r/x%2Fy"
    assert problems == [], "no CSP violation or script error"
    await page.close()

    # The endpoints read the path from the URL's segments, as the pages do.
    for path, status_wanted in (("/api/runs/a%2Fb/send", 200), ("/api/runs/a/b/send", 200), ("/api/runs/r/x/y/send", 404)):
        status, body = await http(app.port, "POST", path, "X-Durable-UI: 1", body='{"topic": "http", "value": "1"}')
        assert status == status_wanted, (path, body)
    assert await root.recv("http", timeout=10) == 1 and await child.recv("http", timeout=10) == 1
    assert "there is no workflow at path ('r', 'x', 'y')" in body
    status, body = await http(app.port, "POST", "/api/runs/a/b/resume", "X-Durable-UI: 1")
    assert status == 400 and "resumed with its root" in body
    status, body = await http(app.port, "POST", "/api/runs/a/b/fork", "X-Durable-UI: 1", body='{"new_name": "c"}')
    assert status == 400 and "forked with its root" in body
    status, body = await http(app.port, "GET", "/api/live/runs/a%2Fb")
    assert status == 200 and json.loads(body.split("\r\n\r\n", 1)[1])["version"] is not None
    status, body = await http(app.port, "POST", "/api/runs/a%2Fb/cancel", "X-Durable-UI: 1")
    assert status == 200
    assert (await durable.get(db, "a/b")).status == "cancelled"
    assert (await durable.get(db, ("a", "b"))).status == "running", "the child b of a is another workflow"


async def said_in(page: Page, form: str) -> str:
    """What the form ``form`` said once it answered."""
    said = page.locator(f"{form} output.said")
    await page.wait_for_function("o => o.textContent !== '…' && o.textContent !== ''", arg=await said.element_handle())
    return await said.inner_text()


async def test_the_start_page_starts_a_workflow_by_name(
    db: durable.Db,
    pg: asyncpg.Connection,
    browser: Browser,
    serve: Callable[..., Awaitable[Served]],
    executor: durable.Executor,
) -> None:
    await durable.create_queue(db, "ui-start")
    await durable.create_queue(db, HOSTILE)
    # Suggested too: a scheduled function (no executor here knows it), and the
    # function of a recent root.
    await pg.execute(
        "INSERT INTO task_schedule_spec (workflow, spec, next_tick) VALUES ('ui.weekly', 'every 604800', now())"
    )
    await durable.create_queue(db, "paused")
    await durable.pause_queue(db, "paused")
    await nightly.enqueue(db, "nightly-1", 1)
    app = await serve()
    page = await browser.new_page()
    problems = watch(page)
    page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    await page.goto(app.url + "/")
    await page.click("#nav-start")
    assert page.url == app.url + "/start"
    known = await page.locator("#known-workflows option").evaluate_all("os => os.map(o => o.value)")
    assert known == ["ui.greet", "ui.nightly", "ui.pipeline", "ui.weekly"]
    queues = await page.locator('select[name="queue"] option').all_inner_texts()
    assert queues == sorted(["default", "paused", "ui-start", HOSTILE])
    assert await page.locator('select[name="queue"]').input_value() == "default"

    form = page.locator("#start-form")
    await form.locator('input[name="workflow"]').fill("ui.greet")
    await form.locator('select[name="queue"]').select_option("ui-start")
    await form.locator('textarea[name="input"]').fill('"ada')
    await form.locator('button[type="submit"]').click()
    assert (await said_in(page, "#start-form")).startswith("the input is not valid JSON: Unterminated string")
    await form.locator('textarea[name="input"]').fill('"ada"')
    await form.locator('input[name="delay"]').fill("soon")
    await form.locator('button[type="submit"]').click()
    await page.wait_for_function("() => document.querySelector('#start-form output').textContent.includes('duration')")
    await form.locator('input[name="delay"]').fill("")
    await form.locator('button[type="submit"]').click()
    # No name given: one is made; the page of the new run opens, and the executor runs it.
    await page.wait_for_url(app.url + "/runs/ui.greet-*")
    name = page.url.split("/runs/", 1)[1]
    assert await durable.result(db, name, timeout=30) == "hello ada"
    await page.reload()
    assert await page.locator("h1 .status").inner_text() == "completed"
    assert await page.locator("#input .json-tree").inner_text() == '"ada"'

    # A name of one's own; taken the second time.
    async def start_greet_1() -> None:
        await page.goto(app.url + "/start")
        await form.locator('input[name="workflow"]').fill("ui.greet")
        await form.locator('input[name="name"]').fill("greet-1")
        await form.locator('select[name="queue"]').select_option("ui-start")
        await form.locator('textarea[name="input"]').fill('"bob"')
        await form.locator('input[name="priority"]').fill("5")
        await form.locator('button[type="submit"]').click()

    await start_greet_1()
    await page.wait_for_url(app.url + "/runs/greet-1")
    await start_greet_1()
    assert "a run named 'greet-1' exists already" in await said_in(page, "#start-form")
    assert await durable.result(db, "greet-1", timeout=30) == "hello bob"
    assert await pg.fetchval("SELECT priority FROM task WHERE name = 'greet-1'") == 5
    assert problems == [], "no CSP violation, script error or dialog"
    await page.close()

    async def start(**form: str) -> tuple[int, str]:
        return await http(app.port, "POST", "/api/start", "X-Durable-UI: 1", body=json.dumps(form))

    status, body = await start(workflow="ui.greet", queue="nope", input='"x"')
    assert status == 400 and "unknown queue 'nope': choose one of" in body
    status, body = await start(workflow="", input='"x"')
    assert status == 400 and "a workflow is needed" in body
    status, body = await start(workflow="ui.greet", delay="5m", run_at="2030-01-01T00:00:00Z")
    assert status == 400 and "not both" in body
    status, body = await start(workflow="ui.greet", name="later", queue="ui-start", input='"z"', run_at="2999-01-01")
    assert status == 200 and '"url":"/runs/later"' in body
    assert await status_of(pg, "later") == "scheduled"
    status, body = await start(workflow="ui.greet", name="p", priority="high")
    assert status == 400 and "priority must be a whole number" in body
    assert await pg.fetchval("SELECT count(*) FROM task WHERE name IN ('p', 'nope')") == 0


async def test_the_run_page_forks_a_root_from_a_step(
    db: durable.Db,
    pg: asyncpg.Connection,
    browser: Browser,
    serve: Callable[..., Awaitable[Served]],
    executor: durable.Executor,
) -> None:
    assert await (await pipeline.enqueue(db, "etl-1", 1)).result(timeout=30) == [1, 10]
    async with Ctx.start(db, "order-1") as order:
        await order.child("ship", input=None)
    app = await serve()
    page = await browser.new_page()
    problems = watch(page)
    page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    dialog = page.locator("#fork-dialog")
    form = page.locator("#fork-form")

    await page.goto(app.url + "/runs/etl-1")
    assert await dialog.is_visible() is False
    await page.locator('tr[data-step="second"] button.fork-from').click()
    await dialog.wait_for()
    assert 'From step "second"' in await page.locator("#fork-what").inner_text()
    assert await form.locator('input[name="new_name"]').input_value() == "etl-1-fork-1"
    assert await form.locator('textarea[name="input"]').input_value() == "1"
    await form.locator('textarea[name="input"]').fill("{2")
    await form.locator('button[type="submit"]').click()
    assert (await said_in(page, "#fork-form")).startswith("the input is not valid JSON: Expecting property name")
    await form.locator('textarea[name="input"]').fill("2")
    ran.clear()
    await form.locator('button[type="submit"]').click()
    await page.wait_for_url(app.url + "/runs/etl-1-fork-1")
    # Kept: "first" (with the source's input); run again with the new one: "second".
    assert await durable.result(db, "etl-1-fork-1", timeout=30) == [1, 20]
    assert ran == ["second"]

    # The whole run, with its input kept; the suggestion is the next free name.
    await page.goto(app.url + "/runs/etl-1")
    await page.click("#fork")
    assert "keeps no step" in await page.locator("#fork-what").inner_text()
    assert await form.locator('input[name="new_name"]').input_value() == "etl-1-fork-2"
    await form.locator('input[name="new_name"]').fill("etl-1")
    await form.locator('button[type="submit"]').click()
    assert "a workflow named 'etl-1' exists already" in await said_in(page, "#fork-form")
    await form.locator('input[name="new_name"]').fill("etl-1-again")
    ran.clear()
    await form.locator('button[type="submit"]').click()
    await page.wait_for_url(app.url + "/runs/etl-1-again")
    assert await durable.result(db, "etl-1-again", timeout=30) == [1, 10]
    assert ran == ["first", "second"]
    assert await pg.fetchval("SELECT input FROM task WHERE name = 'etl-1-again'") == "1"

    # A child's page cannot fork (fork takes a root); a root started by hand can.
    await page.goto(app.url + "/runs/order-1/ship")
    assert await page.locator("[data-fork]").count() == 0
    assert await page.locator("#fork-dialog").count() == 0
    assert problems == [], "no CSP violation, script error or dialog"
    await page.close()

    status, body = await http(
        app.port, "POST", "/api/runs/etl-1/fork", "X-Durable-UI: 1", body='{"new_name": "x", "from_step": "nope"}'
    )
    assert status == 400 and "has no step or child workflow named 'nope'" in body
    status, body = await http(app.port, "POST", "/api/runs/nope/fork", "X-Durable-UI: 1", body='{"new_name": "x"}')
    assert status == 404 and "no root workflow named 'nope'" in body


async def test_the_runs_page_cancels_and_resumes_all_that_match_up_to_a_cap(
    db: durable.Db,
    pg: asyncpg.Connection,
    browser: Browser,
    serve: Callable[..., Awaitable[Served]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(actions, "BULK_CAP", 3)
    await durable.create_queue(db, "paused")
    await durable.pause_queue(db, "paused")
    for n in range(1, 5):
        await nightly.enqueue(db, f"nightly-{n}", n)
    await Ctx.start(db, "nightly-5")  # running (by hand): the cap holds across statuses
    async with Ctx.start(db, "report-1") as report:
        await report.complete(1)
    app = await serve()
    page = await browser.new_page()
    problems = watch(page)
    questions: list[str] = []

    async def confirm(dialog: Any) -> None:
        questions.append(dialog.message)
        # A run queued between the preview and the action is not caught.
        await nightly.enqueue(db, "nightly-new", 6)
        await dialog.accept()

    page.on("dialog", confirm)
    await page.goto(app.url + "/?" + urlencode({"prefix": "nightly-"}))
    await page.click('button[data-bulk="cancel"]')
    said = page.locator("#bulk-said")
    await page.wait_for_function("() => document.getElementById('bulk-said').textContent !== ''")
    assert await said.inner_text() == "3 runs cancelled."
    assert questions == [
        "Cancel 3+ runs (unfinished) matching name starting with 'nightly-'? Only the newest 3 will be cancelled. "
        "Each is cancelled with every unfinished workflow under it."
    ]
    statuses = {r["name"]: r["status"] for r in await pg.fetch("SELECT name, status FROM task WHERE parent_id IS NULL")}
    assert statuses == {
        "nightly-1": "queued",
        "nightly-2": "queued",
        "nightly-3": "cancelled",
        "nightly-4": "cancelled",
        "nightly-5": "cancelled",
        "nightly-new": "queued",
        "report-1": "completed",
    }

    # Resume what the filter shows (cancelled ones); nothing to do says so, without asking.
    async def accept(dialog: Any) -> None:
        questions.append(dialog.message)
        await dialog.accept()

    page.remove_listener("dialog", confirm)
    page.on("dialog", accept)
    await page.goto(app.url + "/?" + urlencode({"status": "cancelled", "prefix": "nightly-"}))
    await page.click('button[data-bulk="resume"]')
    await page.wait_for_function("() => document.getElementById('bulk-said').textContent === '3 runs resumed.'")
    assert questions[1:] == ["Resume 3 runs (failed or cancelled) matching status cancelled, name starting with 'nightly-'?"]
    assert await pg.fetchval("SELECT count(*) FROM task WHERE status = 'queued'") == 5
    assert await status_of(pg, "nightly-5") == "failed", "resumed, a run by hand waits for its process"
    await page.click('button[data-bulk="cancel"]')
    await page.wait_for_function("() => document.getElementById('bulk-said').textContent.startsWith('No ')")
    assert await said.inner_text() == (
        "No unfinished run matches status cancelled, name starting with 'nightly-': nothing to do."
    )
    assert len(questions) == 2
    assert problems == [], "no CSP violation or script error"
    await page.close()

    # Filters that are not understood are refused (ignored, they would widen the action).
    status, body = await http(app.port, "GET", "/api/bulk/cancel/preview?status=bogus")
    assert status == 400 and "unknown status" in body
    status, body = await http(app.port, "POST", "/api/bulk/cancel?status=bogus&upto=100", "X-Durable-UI: 1")
    assert status == 400
    status, body = await http(app.port, "POST", "/api/bulk/cancel", "X-Durable-UI: 1")
    assert status == 400 and "upto must be a whole number" in body
    status, body = await http(app.port, "POST", "/api/bulk/delete?upto=100", "X-Durable-UI: 1")
    assert status == 404
    # Children are cancelled and resumed with their roots: no bulk action on a parent's children.
    status, body = await http(app.port, "POST", "/api/bulk/cancel?parent=nightly-1&upto=100", "X-Durable-UI: 1")
    assert status == 400 and "bulk actions act on roots" in body
    assert await pg.fetchval("SELECT count(*) FROM task WHERE status = 'queued'") == 5


async def test_read_only_mode_has_none_of_the_new_actions(
    db: durable.Db, pg: asyncpg.Connection, serve: Callable[..., Awaitable[Served]]
) -> None:
    await Ctx.start(db, "order-1")
    await durable.create_queue(db, "mail")
    app = await serve(read_only=True)
    for path in ("/", "/runs/order-1"):
        status, body = await http(app.port, "GET", path)
        assert status == 200, path
        for absent in ("<form data-post", "<dialog", "data-bulk", "data-fork", 'id="nav-start"', "Cancel matching"):
            assert absent not in body, (path, absent)
    # (The header's Freeze and Theme buttons change only the view; so do the copy buttons.)
    main = (await http(app.port, "GET", "/runs/order-1"))[1].split("<main>")[1]
    assert not re.findall(r'<button (?!type="button" class="json-copy")', main)
    status, body = await http(app.port, "GET", "/start")
    assert status == 404 and "read-only" in body and "<form" not in body
    writes = [
        ("/api/runs/order-1/send", '{"topic": "t", "value": "1"}'),
        ("/api/runs/order-1/fork", '{"new_name": "order-2"}'),
        ("/api/start", '{"workflow": "ui.greet", "name": "g", "queue": "mail"}'),
        ("/api/bulk/cancel?upto=1000", ""),
    ]
    for path, body in writes:
        assert (await http(app.port, "POST", path, "X-Durable-UI: 1", body=body))[0] == 405, path
    assert await pg.fetchval("SELECT count(*) FROM task_message") == 0
    assert await pg.fetchval("SELECT count(*) FROM task WHERE parent_id IS NULL") == 1
    assert await status_of(pg, "order-1") == "running"
    # The preview is a read: answered.
    status, body = await http(app.port, "GET", "/api/bulk/cancel/preview")
    assert status == 200 and "Cancel 1 run (unfinished) matching no filter (every run)?" in body

    writable = await serve()
    status, body = await http(writable.port, "GET", "/runs/order-1")
    for present in ('id="send-form"', 'id="fork-dialog"', 'id="nav-start"'):
        assert present in body, present
    status, body = await http(writable.port, "POST", "/api/runs/order-1/send", body='{"topic": "t", "value": "1"}')
    assert status == 403, "a write needs the custom header"
    assert await pg.fetchval("SELECT count(*) FROM task_message") == 0


#: The largest int durable stores (beyond 2**53: a JavaScript number would round it).
BIG = 2**63 - 1
#: Beyond 64 bits: durable refuses it, but a row enqueued in SQL may hold it.
HUGE = 12345678901234567890123


async def make_timeline_runs(db: durable.Db) -> None:
    """For the timeline: ``flow`` has a step retried once, a sleep, a
    message received, an event, a big number, and a child (hostile name)
    with a grandchild; ``twice`` was claimed twice (failed, then taken
    again); ``nightly-1`` waits behind a paused queue."""
    flow = await Ctx.start(db, "flow", input={"big": BIG})
    tries = 0

    def flaky() -> int:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise ValueError("first try fails")
        return BIG

    await flow.step("flaky", flaky, retries=1, backoff=FAST)
    await flow.sleep("nap", 0.05)
    await durable.send(db, "flow", "go", {"n": 1})
    assert await flow.recv("go", timeout=5) == {"n": 1}
    await flow.set_event("stage", "done")
    child = await flow.child(HOSTILE_TOO, input=None)
    await child.step(HOSTILE_TOO, lambda: 1)
    grandchild = await child.child("grandchild", input=None)
    await grandchild.step("deep", lambda: 2)
    await grandchild.complete(None)
    await child.complete(None)
    await flow.complete({"big": BIG})

    first = await Ctx.start(db, "twice", input=1)
    await first.fail(ValueError("the first claim fails"))
    again = await Ctx.start(db, "twice", input=1)  # takes the failed root: attempt 2
    await again.complete(2)

    await durable.create_queue(db, "paused")
    await durable.pause_queue(db, "paused")
    await nightly.enqueue(db, "nightly-1", 1)


async def test_the_timeline_draws_attempts_waits_sleeps_and_messages(
    db: durable.Db, pg: asyncpg.Connection, browser: Browser, serve: Callable[..., Awaitable[Served]]
) -> None:
    await make_timeline_runs(db)
    app = await serve()
    page = await browser.new_page()
    await page.goto(app.url + "/runs/flow")
    timeline = page.locator("#timeline[data-live] svg.timeline")
    flaky = timeline.locator('g[data-row="flaky"]')
    bars = flaky.locator("rect.tl-run")
    assert await bars.count() == 2, "each attempt its own bar"
    titles = [await bars.nth(i).locator("title").text_content() for i in range(2)]
    assert titles[0] is not None and titles[0].startswith("flaky · failed · attempt 1 · ")
    assert titles[1] is not None and titles[1].startswith("flaky · completed · attempt 2 · ")
    assert await flaky.locator("rect.tl-status-failed").count() == 1
    nap = timeline.locator('g[data-row="nap"]')
    assert await nap.locator("rect.tl-sleep").count() == 1, "the sleep is a gap of its own"
    assert (await nap.locator("text.tl-note").text_content() or "").startswith("sleep until ")
    go = timeline.locator('g[data-row="go"]')
    mark = await go.locator("polygon.tl-mark-received title").text_content()
    assert mark is not None and "received a message on topic 'go'" in mark
    assert await timeline.locator('g[data-row="flow"] polygon.tl-mark-message').count() == 1, "its arrival"
    assert await timeline.locator('g[data-row="event stage"] polygon.tl-mark-event').count() == 1
    # Children under their parent, indented, in start order; hostile names as text.
    labels = await timeline.locator("g.tl-row").evaluate_all("gs => gs.map(g => g.dataset.row)")
    assert labels == ["flow", "flaky", "nap", "go", "event stage", HOSTILE_TOO, HOSTILE_TOO, "grandchild", "deep"]
    child_label = timeline.locator(f'g.tl-workflow[data-row="{HOSTILE_TOO}"] text.tl-label')
    assert await child_label.evaluate("e => e.firstChild.nodeValue") == HOSTILE_TOO
    assert float(await child_label.get_attribute("x") or 0) > float(
        await timeline.locator('g[data-row="flow"] text.tl-label').get_attribute("x") or 0
    )
    assert await page.locator("img").count() == 0, "the hostile name made no element"

    # The children's tree opens in place.
    tree = page.locator("#children[data-live]")
    node = tree.locator(f'li[data-name="{HOSTILE_TOO}"]')
    assert await node.locator("> details > summary a").inner_text() == HOSTILE_TOO
    deeper = node.locator('li[data-name="grandchild"]')
    assert not await deeper.is_visible(), "folded beyond the first level"
    await node.locator("> details > summary .status").click()
    await deeper.wait_for(state="visible")
    assert not await deeper.locator('li[data-tree-step="deep"]').is_visible()
    await deeper.locator("> details > summary .status").click()
    await deeper.locator('li[data-tree-step="deep"]').wait_for(state="visible")

    # The JSON viewer: big numbers exact, a copy button with the exact JSON.
    assert str(BIG) in await page.locator("#input .json-tree").inner_text()
    assert str(BIG) in await page.locator('tr[data-step="flaky"] .json-tree').inner_text()
    steps = page.locator("#steps[data-live]")
    assert await steps.locator('tr[data-step="flaky"]').count() == 1

    # A run claimed twice: an attempt bar per claim; a queued run's wait apart.
    await page.goto(app.url + "/runs/twice")
    twice = page.locator('svg.timeline g[data-row="twice"] rect.tl-run')
    assert await twice.count() == 2
    assert (await twice.nth(0).locator("title").text_content() or "").startswith("twice · failed · attempt 1")
    await page.goto(app.url + "/runs/nightly-1")
    queued = page.locator('svg.timeline g[data-row="nightly-1"]')
    assert await queued.locator("rect.tl-wait").count() == 1
    assert await queued.locator("rect.tl-run").count() == 0, "it has not run"
    assert "waited in queue paused" in (await queued.locator("rect.tl-wait title").text_content() or "")


async def test_a_steps_value_never_breaks_its_run_page_and_a_sleep_is_drawn_by_its_mark(
    db: durable.Db, pg: asyncpg.Connection, serve: Callable[..., Awaitable[Served]]
) -> None:
    async with Ctx.start(db, "odd") as run:
        await run.step("odd", lambda: "2026-13-45T25:61:61+00:00")
        await run.step("a time", lambda: "2126-01-01T07:43:59+00:00")
        await run.complete(None)
    app = await serve()
    status, body = await http(app.port, "GET", "/runs/odd")
    assert status == 200 and "2026-13-45T25:61:61+00:00" in body
    assert "tl-sleep" not in body.split('<p class="tl-legend')[0], "values of the run's, not sleeps"

    # A sleep is saved as a step the engine marks a sleep: drawn, with its date.
    sleeper = await Ctx.start(db, "sleeper")
    far = datetime(2126, 1, 1, 7, 43, 59, tzinfo=timezone.utc)
    sleeping = asyncio.ensure_future(sleeper.sleep("long", until=far))

    async def saved() -> bool:
        return bool(await pg.fetchval("SELECT status = 'completed' FROM task WHERE name = 'long'"))

    await until(saved, "the sleep's step is saved")
    mark = await pg.fetchval("SELECT waiting FROM task WHERE name = 'long'")
    assert json.loads(mark) == {"kind": "sleep"}
    status, body = await http(app.port, "GET", "/runs/sleeper")
    assert status == 200 and ">sleep until 2126-01-01 07:43:59.000</text>" in body
    sleeping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeping


async def test_a_large_value_is_shown_cut_with_a_link_that_serves_it_whole(
    db: durable.Db, pg: asyncpg.Connection, serve: Callable[..., Awaitable[Served]]
) -> None:
    big = {"rows": ["x" * 100 for _ in range(100_000)], "n": BIG}  # about 10 MB
    run = await Ctx.start(db, "big", input=big)
    # Many values of the viewer's size: the page shows so much of them, then links them.
    for n in range(40):
        part = list(range(n, n + 12_000))
        await run.step(f"part-{n}", lambda: part)
    await run.complete(big)
    app = await serve()
    status, body = await http(app.port, "GET", "/runs/big")
    assert status == 200
    # (Shown whole, it was a 91 MB page: the input and the output each in its
    # viewer and its copy button, the input in the fork dialog too.)
    assert len(body) < 3_000_000, "the values are shown cut: the page spends at most 2 MiB on them"
    said = re.findall(r'<p class="json-cut-said">(.*?) <a class="json-whole" href="([^"]+)"', body)
    task_id = await pg.fetchval("SELECT id FROM task WHERE name = 'big'")
    assert said[:2] == [
        ("9.9 MiB of JSON: the first 64.0 KiB shown.", f"/api/values/{task_id}/input"),
        ("9.9 MiB of JSON: the first 64.0 KiB shown.", f"/api/values/{task_id}/output"),
    ]
    assert any(text.endswith("not shown (a page shows at most 2.0 MiB of values).") for text, _ in said)
    assert 'data-copy="{&#34;rows' not in body, "no copy button holds it"
    # The fork dialog does not hold it either: unedited, the fork keeps it.
    assert re.search(r'<textarea name="input" rows="6" data-only-if-edited placeholder="[^"]*"></textarea>', body)

    status, whole = await http(app.port, "GET", f"/api/values/{task_id}/output")
    assert status == 200 and "content-type: application/json" in whole.lower()
    assert json.loads(whole.split("\r\n\r\n", 1)[1]) == big, "exactly, the big integer too"
    step_id = await pg.fetchval("SELECT id FROM task WHERE name = 'part-39'")
    status, whole = await http(app.port, "GET", f"/api/values/{step_id}/output")
    assert status == 200 and json.loads(whole.split("\r\n\r\n", 1)[1]) == list(range(39, 39 + 12_000))
    # An error's message and traceback are values too: cut, in the list and on the page.
    with pytest.raises(ValueError):
        async with Ctx.start(db, "loud") as loud:
            raise ValueError("boom " * 2_000_000)
    for path in ("/", "/runs/loud"):
        status, body = await http(app.port, "GET", path)
        assert status == 200 and len(body) < 1_000_000, (path, len(body))
        assert "ValueError: boom boom" in body and " more characters)" in body
    for path in (
        f"/api/values/{task_id}/error",  # none
        f"/api/values/{task_id}/waiting",
        "/api/values/" + "9" * 21 + "/output",
        "/api/values/-1/output",
        "/api/values/x/output",
        f"/api/values/{task_id + 10_000}/output",
    ):
        assert (await http(app.port, "GET", path))[0] == 404, path


async def test_the_copy_button_copies_the_exact_json(
    db: durable.Db, pg: asyncpg.Connection, browser: Browser, serve: Callable[..., Awaitable[Served]]
) -> None:
    async with Ctx.start(db, "big", input={"n": BIG, "s": HOSTILE}) as run:
        await run.complete([BIG, 1.5, None])
    # A number beyond 64 bits, as a row enqueued in SQL may hold.
    await pg.execute("UPDATE task SET input = jsonb_set(input, '{n}', $1::text::jsonb) WHERE name = 'big'", str(HUGE))
    app = await serve()
    context = await browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = await context.new_page()
    await page.goto(app.url + "/runs/big")
    assert await page.locator("#output .json-tree").inner_text() == f"[ 3 items ]\n{BIG}\n1.5\nnull"
    await page.locator("#input button.json-copy").click()
    await page.locator("#input button.json-copy.copied").wait_for()
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied == '{\n  "n": ' + str(HUGE) + ',\n  "s": "<script>alert(1)</script>"\n}'
    assert str(HUGE) in await page.locator("#input .json-tree").inner_text()
    await page.locator("#output button.json-copy").click()
    await until(
        lambda: _clipboard_is(page, f"[\n  {BIG},\n  1.5,\n  null\n]"), "the output is on the clipboard"
    )
    await context.close()


async def _clipboard_is(page: Page, text: str) -> bool:
    return bool(await page.evaluate("navigator.clipboard.readText()") == text)


async def test_a_retried_step_leaves_its_first_attempt_in_the_history(
    db: durable.Db, pg: asyncpg.Connection
) -> None:
    await make_timeline_runs(db)
    rows = await pg.fetch(
        """SELECT a.attempt, a.status, a.error ->> 'message' AS message, a.started_at <= a.ended_at AS ordered,
                  a.ended_at <= a.replaced_at AS before_next
           FROM task_attempt AS a JOIN task AS t ON t.id = a.task_id WHERE t.name = 'flaky'"""
    )
    assert [tuple(row) for row in rows] == [(1, "failed", "first try fails", True, True)]
    current = await pg.fetchrow("SELECT attempt, status, error FROM task WHERE name = 'flaky'")
    assert current is not None and tuple(current) == (2, "completed", None)
    claims = await pg.fetch(
        """SELECT a.attempt, a.status, a.error ->> 'message' AS message FROM task_attempt AS a
           JOIN task AS t ON t.id = a.task_id WHERE t.name = 'twice'"""
    )
    assert [tuple(row) for row in claims] == [(1, "failed", "the first claim fails")]
    # Steps written once (no retry) leave no history.
    assert await pg.fetchval("SELECT count(*) FROM task_attempt") == 2
    # A fork keeps the history of the steps it keeps.
    await durable.fork(db, "flow", "flow-again", from_step="go")
    forked = await pg.fetch(
        """SELECT a.attempt, a.status, a.error ->> 'message' AS message FROM task_attempt AS a
           JOIN task AS t ON t.id = a.task_id JOIN task AS r ON r.id = t.root_id
           WHERE t.name = 'flaky' AND r.name = 'flow-again'"""
    )
    assert [tuple(row) for row in forked] == [(1, "failed", "first try fails")]
    nap = await pg.fetchval(
        "SELECT t.waiting FROM task AS t JOIN task AS r ON r.id = t.root_id WHERE t.name = 'nap' AND r.name = 'flow-again'"
    )
    assert nap is not None and json.loads(nap) == {"kind": "sleep"}, "a fork keeps a sleep's mark"
    # gc takes the history with its runs.
    await pg.execute("UPDATE task SET completed_at = now() - interval '2 days' WHERE parent_id IS NULL")
    assert await durable.gc(db, older_than=timedelta(days=1)) == 2  # flow and twice; not the unfinished fork
    remaining = await pg.fetch(
        """SELECT t.root_id = r.id AS forked FROM task_attempt AS a JOIN task AS t ON t.id = a.task_id,
                  task AS r WHERE r.name = 'flow-again'"""
    )
    assert [row["forked"] for row in remaining] == [True], "the history of the runs collected went with them"


def test_the_timeline_layout_puts_attempts_waits_and_sleeps_on_one_axis() -> None:
    from datetime import datetime, timezone

    from durable._info import StepInfo, WorkflowInfo, WorkflowTree
    from durable.ui.timeline import LABEL, WIDTH, Attempt, History, layout

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    info = WorkflowInfo(
        1, "root", ("root",), "completed", "f", "q", None, None, None, 1, 0, 0, None, t0, at(2), at(10), None, None,
        None,
    )
    retried = StepInfo(2, "retried", "completed", 2, 7, None, at(2), at(4), at(5))
    nap = StepInfo(3, "nap", "completed", 1, at(9).isoformat(), None, at(5), at(5), at(5))
    first = Attempt(2, 1, "failed", at(2), at(3), at(4), {"message": "no"})
    found = layout(WorkflowTree(info, (retried, nap), ()), History({2: [first]}, sleeps=frozenset({3})), at(20))
    root, step, sleep = found.rows
    scale = (WIDTH - LABEL) / 10
    assert [(bar.kind, bar.status) for bar in root.bars] == [("wait", "queued"), ("run", "completed")]
    assert root.bars[0].x == LABEL and root.bars[0].width == 2 * scale, "created to started: the queue wait"
    assert [(bar.status, bar.x, bar.width) for bar in step.bars] == [
        ("failed", LABEL + 2 * scale, scale),
        ("completed", LABEL + 4 * scale, scale),
    ]
    assert [bar.kind for bar in sleep.bars] == ["run", "sleep"]
    assert sleep.bars[1].x == LABEL + 5 * scale and sleep.bars[1].width == 4 * scale
    assert sleep.note == "sleep until 00:00:09.000", "today: the time of day"
    assert [tick.label for tick in found.ticks] == ["0", "+2.5s", "+5.0s", "+7.5s", "+10.0s"]


def test_a_sleep_is_told_from_a_value_by_its_mark_and_labelled_with_its_date_when_not_today() -> None:
    from durable._info import StepInfo, WorkflowInfo, WorkflowTree
    from durable.ui.timeline import History, layout

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    info = WorkflowInfo(
        1, "root", ("root",), "running", None, None, None, None, None, 1, 0, 0, None, t0, t0, None, None, None, None
    )
    far = datetime(2126, 1, 1, 7, 43, 59, tzinfo=timezone.utc)
    steps = (
        StepInfo(2, "long", "completed", 1, far.isoformat(), None, t0, t0, t0),
        # Values of the workflow's that look like a time, or almost: never read as one.
        StepInfo(3, "odd", "completed", 1, "2026-13-45T25:61:61+00:00", None, t0, t0, t0),
        StepInfo(4, "a time", "completed", 1, far.isoformat(), None, t0, t0, t0),
        # A sleep whose output is no time (written by hand): drawn as a step.
        StepInfo(5, "mangled", "completed", 1, "2026-13-45T25:61:61+00:00", None, t0, t0, t0),
        StepInfo(6, "naive", "completed", 1, "2126-01-01T07:43:59", None, t0, t0, t0),
    )
    found = layout(WorkflowTree(info, steps, ()), History(sleeps=frozenset({2, 5, 6})), t0 + timedelta(hours=1))
    rows = {row.label: row for row in found.rows}
    assert rows["long"].note == "sleep until 2126-01-01 07:43:59.000"
    assert [bar.kind for bar in rows["long"].bars] == ["run", "sleep"]
    assert "sleep until 2126-01-01 07:43:59.000 (" in rows["long"].bars[1].title
    for label in ("odd", "a time", "mangled", "naive"):
        assert rows[label].note is None and [bar.kind for bar in rows[label].bars] == ["run"], label
