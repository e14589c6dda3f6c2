"""What the page can do, through the broker's own methods and checks (the page is an
operator, like the CLI): read the state, send a note, and kill a peer after a confirmation
that names its process.

A send goes through ``Broker.send`` as the CLI's does (``from_id`` ``cli``, unverified).
A kill is two steps: ``kill/preview`` names the process (pid, start, command line) for the
person to confirm, and ``kill`` carries that pid and start back; if the peer's agent is no
longer that process the kill is refused, so the person kills only what they saw. Then
``Broker.kill`` runs every check of ``claude-peers kill`` and records the kill, by
``dashboard``.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server

from claudepeers.broker.records import Credentials
from claudepeers.broker.web import views
from claudepeers.broker.web.site import answer_json
from claudepeers.common import agents
from claudepeers.broker.storage.store import StoreError
from claudepeers.common.errors import KillRefused, PeersError

#: Who the kill audit names for a kill asked for from the page.
BY_DASHBOARD = "dashboard"

#: HTTP status for each broker error the page can cause (anything else: 500, logged).
ERROR_STATUS = {"UnknownPeer": http.NOT_FOUND, "PeerGone": http.GONE, "AmbiguousPeer": http.CONFLICT,
                "KillRefused": http.FORBIDDEN, "LimitExceeded": 429, "UnknownMessage": http.NOT_FOUND}


class Actions:
    """The page's requests, answered from the live broker."""

    log = Logger()

    def __init__(self, broker: Any, describe: Any = agents.describe) -> None:
        """``describe(pid)``: the process behind a pid (tests stand in for the process table)."""
        self._broker = broker
        self._describe = describe

    def state(self, request: Any) -> Any:
        """``GET /api/state``: everything the page shows."""
        return self._answer(request, views.state_view(self._broker))

    def thread(self, request: Any) -> Any:
        """``GET /api/thread?id=<message id>``: the thread of that message (brokers that keep threads)."""
        if getattr(self._broker, "threads", None) is None:
            request.setResponseCode(http.NOT_FOUND)
            return answer_json(request, {"error": "this broker keeps no threads"})
        raw = (request.args.get(b"id") or [b""])[0]
        if not raw.isdigit() or len(raw) > 18:
            return self._bad(request, "thread takes ?id=<message id>")
        return self._answer(request, maybeDeferred(views.thread_view, self._broker, int(raw)))

    def send(self, request: Any, arguments: dict[str, Any]) -> Any:
        """``POST /api/send {to, body}``: the broker's answer (shown, woke or queued)."""
        to, body = arguments.get("to"), arguments.get("body")
        if not isinstance(to, str) or not isinstance(body, str):
            return self._bad(request, "send takes {\"to\": <peer id or name>, \"body\": <text>}")
        return self._answer(request, maybeDeferred(self._broker.send, None, to, body))

    def kill_preview(self, request: Any, arguments: dict[str, Any]) -> Any:
        """``POST /api/kill/preview {peer}``: the process a kill would end, to confirm."""
        peer = arguments.get("peer")
        if not isinstance(peer, str):
            return self._bad(request, "kill/preview takes {\"peer\": <peer id or name>}")
        return self._answer(request, maybeDeferred(self._preview, peer))

    def _preview(self, peer: str) -> dict[str, Any]:
        actor = self._broker.resolve(peer)
        record = actor.record
        process = self._describe(record.agent_pid) if record.host == self._broker.host else None
        if process is None or not agents.same_start(process.start, record.agent_start):
            raise KillRefused(f"{actor.name}'s agent (pid {record.agent_pid}) is not running on this host")
        return {"peer_id": actor.id, "name": actor.name, "client_type": record.client_type, "host": record.host,
                "pid": record.agent_pid, "start": record.agent_start,
                "command": " ".join(process.argv) or "(command line not readable)"}

    def kill(self, request: Any, arguments: dict[str, Any]) -> Any:
        """``POST /api/kill {peer, pid, start}``: the broker's kill of exactly that process."""
        peer, pid, start = arguments.get("peer"), arguments.get("pid"), arguments.get("start")
        if not isinstance(peer, str) or type(pid) is not int or not isinstance(start, (int, float)):
            return self._bad(request, "kill takes {\"peer\", \"pid\", \"start\"} as given by kill/preview")
        return self._answer(request, maybeDeferred(self._kill, peer, pid, float(start)))

    def _kill(self, peer: str, pid: int, start: float) -> Deferred:
        actor = self._broker.resolve(peer)
        record = actor.record
        if record.agent_pid != pid or not agents.same_start(record.agent_start, start):
            raise KillRefused(f"{actor.name}'s agent is now pid {record.agent_pid}, not the process you confirmed "
                              f"(pid {pid}); look again")
        # The page is an operator: no peer, and no process of its own for the kernel to
        # name (the session cookie stands for the person who opened the link).
        creds = Credentials("unix", pid=None, uid=os.getuid())
        return self._broker.kill(None, creds, actor.id, by=BY_DASHBOARD).addCallback(
            lambda result: {"outcome": result[0], "peer_id": result[1], "detail": result[2]})

    # --- answering -------------------------------------------------------------------------

    def _bad(self, request: Any, why: str) -> bytes:
        request.setResponseCode(http.BAD_REQUEST)
        return answer_json(request, {"error": why})

    def _answer(self, request: Any, d: Deferred) -> Any:
        """Answer with what ``d`` fires with, or with the error the broker gave."""
        gone = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def write(value: Any) -> None:
            if not gone:
                request.write(answer_json(request, value))
                request.finish()

        def failed(failure: Failure) -> None:
            if failure.check(PeersError):
                code = ERROR_STATUS.get(type(failure.value).__name__, http.BAD_REQUEST)
                text = failure.getErrorMessage()
            elif failure.check(StoreError):
                if not failure.value.reported:
                    self.log.failure("store failed during a dashboard request", failure)
                code, text = http.SERVICE_UNAVAILABLE, f"the broker's database failed: {failure.getErrorMessage()}"
            else:
                self.log.failure("dashboard request failed", failure)
                code, text = http.INTERNAL_SERVER_ERROR, "internal error; see the broker log"
            if not gone:
                request.setResponseCode(code)
                write({"error": text, "kind": type(failure.value).__name__})

        d.addCallbacks(write, failed).addErrback(lambda failure: self.log.failure("answering the page", failure))
        return server.NOT_DONE_YET
