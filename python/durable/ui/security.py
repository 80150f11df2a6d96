"""What guards every request of ``durable ui``: the Host header (against DNS
rebinding), the Origin of a request that has one, the token when there is one,
a custom header on writes, and the response headers (CSP and friends)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, quote, quote_from_bytes, urlencode

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: No inline script or style: scripts and styles only from the server itself.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: The cookie that holds the token once the browser presented it in the URL.
COOKIE = "durable_ui_token"
#: A request that changes something must carry this header (a cross-site form cannot).
WRITE_HEADER = "x-durable-ui"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD = frozenset({"0.0.0.0", "::", ""})
SAFE_METHODS = frozenset({"GET", "HEAD"})


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """The Host header values a browser sends to this server; ``None`` (any)
    for a wildcard bind, whose names are not known here (the token guards it)."""
    if host in WILDCARD:
        return None
    names: Iterable[str] = ("127.0.0.1", "localhost", "[::1]") if is_loopback(host) else ()
    bound = f"[{host}]" if ":" in host else host
    hosts = [f"{name}:{port}".lower() for name in (bound, *names)]
    if port == 80:  # a browser leaves the default port out
        hosts += [name.lower() for name in (bound, *names)]
    return frozenset(hosts)


def new_token() -> str:
    return secrets.token_urlsafe(24)


class Guard:
    """ASGI middleware: refuses what does not come from this server's own pages."""

    def __init__(self, app: ASGIApp, *, hosts: frozenset[str] | None, token: str | None, read_only: bool) -> None:
        self.app = app
        self.hosts = hosts
        self.token = token
        self.read_only = read_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self.check(scope)
        if refused is not None:
            await refused(scope, receive, with_headers(send))
            return
        await self.app(scope, receive, with_headers(send))

    def check(self, scope: Scope) -> Response | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "").lower()
        if self.hosts is not None and host not in self.hosts:
            return PlainTextResponse("unknown Host header: this server answers only to its own address", 421)
        origin = headers.get("origin")
        if origin is not None and origin.lower() != f"http://{host}":
            return PlainTextResponse("cross-origin request refused", 403)
        if scope["method"] not in SAFE_METHODS:
            if self.read_only:
                return PlainTextResponse("read-only: this server changes nothing", 405)
            if headers.get(WRITE_HEADER) != "1":
                return PlainTextResponse(f"a change needs the {WRITE_HEADER} header", 403)
        if self.token is not None:
            return self.check_token(scope, headers)
        return None

    def check_token(self, scope: Scope, headers: Headers) -> Response | None:
        assert self.token is not None
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = dict(query).get("token")
        if given is not None and secrets.compare_digest(given.encode(), self.token.encode()):
            # Into a cookie, and out of the URL (and so out of history and Referer).
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            response = RedirectResponse(own_path(scope) + (f"?{rest}" if rest else ""), 303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            return response
        cookie = SimpleCookie(headers.get("cookie", "")).get(COOKIE)
        if cookie is not None and secrets.compare_digest(cookie.value.encode(), self.token.encode()):
            return None
        return PlainTextResponse("a token is needed: open the URL that `durable ui` printed", 401)


#: What a path keeps unescaped in a redirect (RFC 3986's path characters, and
#: ``%``: the escapes the client sent stay as they were, ``%2F`` in a name too).
PATH_CHARS = "/%:@!$&'()*+,;=-._~"


def own_path(scope: Scope) -> str:
    """The request's path, as a redirect's Location that stays on this
    server: the bytes the client sent, anything a browser could read
    otherwise escaped (``\\``, which it takes for ``/``; controls, which it
    drops), and one leading slash (``//evil.example/x`` names another host)."""
    raw = scope.get("raw_path")
    path = raw if isinstance(raw, bytes) else quote(scope["path"]).encode()
    return "/" + quote_from_bytes(path, safe=PATH_CHARS).lstrip("/")


def with_headers(send: Send) -> Send:
    """``send`` with the security headers added to the response's start."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            headers["content-security-policy"] = CSP
            headers["x-content-type-options"] = "nosniff"
            headers["x-frame-options"] = "DENY"
            headers["referrer-policy"] = "no-referrer"
        await send(message)

    return sending
