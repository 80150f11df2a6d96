"""``durable ui``: a local web view of the workflows, queues and schedules, read
through the read-only API, with a few actions (cancel and resume a run,
pause and resume a queue) unless read-only (``pip install "durable-pg[ui]"``).

``make_app`` is the ASGI app (Starlette, Jinja2 templates, static files
shipped in the package); ``serve`` runs it with uvicorn until stopped."""

from __future__ import annotations

import socket
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .._db import Db
from .actions import Actions
from .pages import Pages
from .security import Guard, allowed_hosts, is_loopback, new_token

__all__ = ["make_app", "serve", "is_loopback", "new_token"]

STATIC = Path(__file__).parent / "static"


def make_app(db: Db, *, host: str, port: int, read_only: bool = False, token: str | None = None) -> Starlette:
    """The app over ``db``, answering as ``host:port`` (the Host header is
    checked against them); with ``token``, only to browsers that present it."""
    pages = Pages(db, read_only=read_only)
    actions = Actions(pages)
    guard = Middleware(Guard, hosts=allowed_hosts(host, port), token=token, read_only=read_only)
    routes = [
        Route("/", pages.runs, name="runs"),
        Route("/runs/{name:path}", pages.run, name="run"),
        Route("/queues", pages.queues, name="queues"),
        # A value the run page shows cut, whole.
        Route("/api/values/{task_id}/{column}", pages.value),
        Route("/schedules", pages.schedules, name="schedules"),
        Route("/start", actions.start_page, name="start"),
        # A bulk action's preview: a read, answered in read-only mode too.
        Route("/api/bulk/{action}/preview", actions.bulk_preview),
        # What the live pages poll (static/live.js): the version of what they show.
        Route("/api/live/runs", pages.runs_version),
        Route("/api/live/runs/{name:path}", pages.run_version),
        # Writes: the guard lets them through only with the custom header, and
        # refuses them all (405) in read-only mode.
        Route("/api/runs/{name:path}/cancel", pages.cancel_run, methods=["POST"]),
        Route("/api/runs/{name:path}/resume", pages.resume_run, methods=["POST"]),
        Route("/api/queues/{name:path}/pause", pages.pause_queue, methods=["POST"]),
        Route("/api/queues/{name:path}/resume", pages.resume_queue, methods=["POST"]),
        Route("/api/runs/{name:path}/send", actions.send, methods=["POST"]),
        Route("/api/runs/{name:path}/fork", actions.fork, methods=["POST"]),
        Route("/api/start", actions.start, methods=["POST"]),
        Route("/api/bulk/{action}", actions.bulk, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, middleware=[guard])


def server(app: Starlette) -> uvicorn.Server:
    config = uvicorn.Config(
        app, log_config=None, log_level="warning", access_log=False, lifespan="off", http="h11", ws="none"
    )
    return uvicorn.Server(config)


async def serve(app: Starlette, sock: socket.socket) -> None:
    """Serves ``app`` on the bound ``sock`` until stopped (Ctrl-C, SIGTERM)."""
    await server(app).serve(sockets=[sock])


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``OSError`` if it cannot be had)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock
