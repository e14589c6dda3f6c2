"""Who may see the dashboard: one-time link tokens, session cookies, Host and Origin checks.

``claude-peers dashboard`` asks the broker for a link carrying a one-time token (the broker
refuses agents: operator.py). Redeeming the token sets a session cookie (HttpOnly,
SameSite=Strict, Path=/) and the token is spent. Every request needs the cookie and a Host
header naming the dashboard's own address (a rebound DNS name gets nothing); every request
that changes something also needs the page's own Origin, POST and a JSON body, which a
form or a cross-site script cannot send without the browser asking first.

Only hashes of tokens and sessions are kept, so a lookup's timing says nothing about them.
Expiry is checked when a token is used: nothing here runs on a timer.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from typing import Any

#: The session cookie's name.
COOKIE = b"claude_peers_dashboard"
#: How long a link may wait before it is opened.
LINK_SECONDS = 300.0
#: Links not yet opened, and sessions, kept at most (the oldest go first).
MAX_LINKS = 16
MAX_SESSIONS = 32


def _key(secret: str | bytes) -> bytes:
    raw = secret.encode("utf-8", "replace") if isinstance(secret, str) else secret
    return hashlib.sha256(raw).digest()


class Sessions:
    """One-time link tokens and the sessions they became."""

    def __init__(self, clock: Any) -> None:
        """``clock`` gives ``seconds()`` (the reactor)."""
        self._clock = clock
        self._links: OrderedDict[bytes, float] = OrderedDict()
        self._sessions: OrderedDict[bytes, None] = OrderedDict()

    def issue_link_token(self) -> str:
        """A new one-time token, valid for LINK_SECONDS."""
        now = self._clock.seconds()
        for key, expiry in list(self._links.items()):
            if expiry <= now:
                del self._links[key]
        while len(self._links) >= MAX_LINKS:
            self._links.popitem(last=False)
        token = secrets.token_urlsafe(32)
        self._links[_key(token)] = now + LINK_SECONDS
        return token

    def redeem(self, token: str) -> str | None:
        """A new session for an unspent, unexpired token (which is spent now), else None."""
        expiry = self._links.pop(_key(token), None)
        if expiry is None or expiry <= self._clock.seconds():
            return None
        session = secrets.token_urlsafe(32)
        self._sessions[_key(session)] = None
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def valid(self, cookie: bytes | None) -> bool:
        """True when ``cookie`` is the value of a live session."""
        return bool(cookie) and _key(cookie) in self._sessions  # type: ignore[arg-type]

    def end_all(self) -> None:
        """Forget every link and session (the dashboard stops)."""
        self._links.clear()
        self._sessions.clear()


def cookie_header(session: str) -> bytes:
    """The Set-Cookie value for a session: HttpOnly, SameSite=Strict, Path=/, no expiry
    (it ends with the browser's session; the broker forgets it when it stops)."""
    return COOKIE + b"=" + session.encode("ascii") + b"; HttpOnly; SameSite=Strict; Path=/"


def origin_of(host: str, port: int) -> bytes:
    """The dashboard's own origin (the one Origin a state-changing request may carry)."""
    return f"http://{host}:{port}".encode("ascii")
