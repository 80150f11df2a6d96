"""Pages of the ui's ASGI app, requested without a server."""

from __future__ import annotations

from typing import Any


async def get(app: Any, path: str) -> tuple[int, str]:
    """``GET path`` of the ASGI ``app``, called directly: the status (500
    for an exception the app raised) and the body."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8765")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8765),
    }
    try:
        await app(scope, receive, send)
    except Exception:  # the app's own 500, re-raised by Starlette after answering
        pass
    statuses = [message["status"] for message in sent if message["type"] == "http.response.start"]
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return (statuses[0] if statuses else 500), body.decode()
