"""The dashboard's HTTP side: one twisted.web resource that checks every request, then routes.

Routes (all need the session cookie and the right Host, except the first two):

- ``GET /?token=T``: spend the one-time token, set the cookie, redirect to ``/`` (so the
  token leaves the address bar and the history);
- anything without a valid cookie: a small page saying to open a new link (401);
- ``GET /``, ``GET /static/<file>``: the page and its assets (shipped in the package);
- ``GET /api/state``: everything the page shows, as JSON; ``GET /api/events``: the
  server-sent event stream (stream.py); ``GET /api/thread?id=N``: a message's thread;
- ``POST /api/send``, ``/api/kill/preview``, ``/api/kill`` (JSON bodies, same Origin):
  actions.py, through the broker's own methods.
"""

from __future__ import annotations

import json
from importlib import resources
from io import BytesIO
from typing import Any, Callable
from urllib.parse import parse_qs

from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.resource import Resource

from claudepeers.broker.web import auth

#: The largest request body read (a message at the broker's body limit, JSON-escaped, fits).
MAX_BODY_BYTES = 1024 * 1024

STATIC_TYPES = {".html": b"text/html; charset=utf-8", ".css": b"text/css; charset=utf-8",
                ".js": b"text/javascript; charset=utf-8", ".svg": b"image/svg+xml"}

#: Sent with every answer: no inline script, nothing from elsewhere, never framed, never cached.
SECURITY_HEADERS = {
    b"Content-Security-Policy": b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    b"X-Frame-Options": b"DENY",
    b"Cache-Control": b"no-store",
}

OPEN_AGAIN = (b"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
              b"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
              b"<title>claude-peers dashboard</title></head><body><main><h1>claude-peers dashboard</h1>"
              b"<p>This link has been used or has expired, or this browser has no session.</p>"
              b"<p>Run <code>claude-peers dashboard</code> in your terminal to open a new link.</p>"
              b"</main></body></html>")


def load_static() -> dict[bytes, tuple[bytes, bytes]]:
    """The page's files, read once from the package: path -> (body, content type)."""
    files: dict[bytes, tuple[bytes, bytes]] = {}
    folder = resources.files("claudepeers.broker.web") / "static"
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in STATIC_TYPES:
            files[b"/static/" + entry.name.encode()] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return files


class BoundedRequest(server.Request):
    """A request whose body is read into memory up to MAX_BODY_BYTES; more is dropped and
    the request answered 413."""

    too_large = False

    def gotLength(self, length: int | None) -> None:  # noqa: N802 - Twisted's name
        """Never a temporary file: bodies are small JSON."""
        self.too_large = length is not None and length > MAX_BODY_BYTES
        self.content = BytesIO()

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802
        """Keep the body while it is within bounds."""
        if not self.too_large and self.content.tell() + len(data) > MAX_BODY_BYTES:
            self.too_large = True
            self.content = BytesIO()
        if not self.too_large:
            self.content.write(data)


class DashboardSite(server.Site):
    """A Site with bounded requests and without access-log lines or factory chatter."""

    requestFactory = BoundedRequest
    noisy = False

    def log(self, request: Any) -> None:
        """No access log: the page's own requests would fill the broker's log."""


class DashboardResource(Resource):
    """Every request passes :meth:`render`: Host, cookie, then the route."""

    isLeaf = True
    log = Logger()

    def __init__(self, dashboard: Any) -> None:
        """``dashboard``: the Dashboard (sessions, address, stream, actions)."""
        super().__init__()
        self._dashboard = dashboard
        self._static = load_static()
        self._get: dict[bytes, Callable[[Any], Any]] = {b"/api/state": dashboard.actions.state,
                                                         b"/api/events": self._events,
                                                         b"/api/thread": dashboard.actions.thread}
        self._post: dict[bytes, Callable[[Any, dict], Any]] = {
            b"/api/send": dashboard.actions.send, b"/api/kill/preview": dashboard.actions.kill_preview,
            b"/api/kill": dashboard.actions.kill,
        }

    def render(self, request: Any) -> Any:
        """Check and route one request."""
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        dashboard = self._dashboard
        if request.getHeader(b"host") != dashboard.host_header:
            return refuse(request, http.FORBIDDEN, "this dashboard answers only at its own address")
        path = request.path
        if path == b"/" and b"token" in request.args and request.method == b"GET":
            return self._redeem(request)
        if not dashboard.sessions.valid(request.getCookie(auth.COOKIE)):
            request.setResponseCode(http.UNAUTHORIZED)
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            return OPEN_AGAIN
        if request.method in (b"GET", b"HEAD"):
            if path == b"/":
                path = b"/static/index.html"
            if path in self._static:
                body, content_type = self._static[path]
                request.setHeader(b"content-type", content_type)
                return body
            if path in self._get and request.method == b"GET":
                return self._get[path](request)
            return refuse(request, http.NOT_FOUND, "no such page")
        if request.method != b"POST" or path not in self._post:
            return refuse(request, http.NOT_ALLOWED, "not a dashboard action")
        if request.getHeader(b"origin") != dashboard.origin:
            return refuse(request, http.FORBIDDEN, "a dashboard action must come from the dashboard's own page")
        content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            return refuse(request, http.UNSUPPORTED_MEDIA_TYPE, "a dashboard action takes a JSON body")
        if request.too_large:
            return refuse(request, http.REQUEST_ENTITY_TOO_LARGE, f"the body is larger than {MAX_BODY_BYTES} bytes")
        try:
            arguments = json.loads(request.content.getvalue().decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return refuse(request, http.BAD_REQUEST, "the body is not JSON")
        if not isinstance(arguments, dict):
            return refuse(request, http.BAD_REQUEST, "the body must be a JSON object")
        return self._post[path](request, arguments)

    def _redeem(self, request: Any) -> bytes:
        token = parse_qs(request.uri.partition(b"?")[2].decode("ascii", "replace")).get("token", [""])[0]
        session = self._dashboard.sessions.redeem(token)
        if session is None:
            request.setResponseCode(http.UNAUTHORIZED)
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            return OPEN_AGAIN
        request.setHeader(b"set-cookie", auth.cookie_header(session))
        request.setResponseCode(http.SEE_OTHER)
        request.setHeader(b"location", b"/")
        return b""

    def _events(self, request: Any) -> Any:
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"x-accel-buffering", b"no")
        self._dashboard.stream.add(request)
        return server.NOT_DONE_YET


def refuse(request: Any, code: int, why: str) -> bytes:
    """A JSON error answer ``{"error": why}`` with status ``code``."""
    request.setResponseCode(code)
    return answer_json(request, {"error": why})


def answer_json(request: Any, value: Any) -> bytes:
    """``value`` as the JSON body of the answer."""
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(value).encode()
