"""kill_peer across hosts (DESIGN 7): recorded by the caller's broker, carried out, audited and
answered by the target's own broker, which runs the same local checks as for its own callers
(pid + start time + agent; never a thread of a shared app-server). A broker never kills a
peer of another host itself.

A request is a row of ``kill_requests`` and a notification to the target's host in the
same transaction; the outcome is written into the row and notified back the same way. A
broker that (re)connects carries out the open requests for its host (recent ones; older
ones are answered "expired": nobody waits for them any more), and the caller, when no word
comes in time, reads the row.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger

from claudepeers.broker import hosts as hostnames
from claudepeers.common.errors import KillRefused

if TYPE_CHECKING:
    from claudepeers.broker.core import Broker
    from claudepeers.broker.hosts import HostRegistration

#: Seconds beyond the kill grace a caller waits for the target's host to answer.
ANSWER_MARGIN_SECONDS = 10.0
#: An open request older than this is not carried out after a reconnect.
EXPIRE_SECONDS = 60.0
_NOW = "EXTRACT(EPOCH FROM clock_timestamp())"


class RemoteKills:
    """Requests this host made of others, and requests others made of this host."""

    log = Logger()

    def __init__(self, broker: "Broker", registration: "HostRegistration") -> None:
        self._broker = broker
        self._registration = registration
        self._waiting: dict[str, Deferred] = {}
        self._running: set[str] = set()

    # --- asking another host --------------------------------------------------------------

    @inlineCallbacks
    def request(self, caller_id: str, peer: Any) -> Any:
        """Ask ``peer``'s host to kill it; fires with (outcome, peer_id, detail)."""
        if not self._registration.reachable(peer.host):
            raise KillRefused(f"{peer.name} runs on host {peer.host}, which is unreachable (its broker's heartbeat "
                              "stopped); only its own broker may kill it")
        request_id = secrets.token_hex(8)
        answered: Deferred = Deferred()
        self._waiting[request_id] = answered
        by = f"{caller_id}@{self._broker.host}"
        yield self._registration.run(self._thd_request, request_id, caller_id, peer.host, peer.id)
        self._broker.emit("kill", peer.id, f"{by} asked host {peer.host} to kill {peer.name}")
        wait = self._broker.limits.kill_grace_seconds + ANSWER_MARGIN_SECONDS
        timer = self._broker.clock.callLater(wait, self._read_answer, request_id, True)
        try:
            outcome, detail = yield answered
        finally:
            self._waiting.pop(request_id, None)
            if timer.active():
                timer.cancel()
        if outcome == "refused":
            raise KillRefused(f"host {peer.host} refused: {detail}")
        return (outcome, peer.id, f"{detail} (on host {peer.host})")

    def _thd_request(self, conn: Any, request_id: str, by_id: str, host: str, target_id: str) -> None:
        with conn.transaction():
            conn.execute("SET LOCAL synchronous_commit = on")
            conn.execute(
                f"INSERT INTO kill_requests (id, at, by_host, by_id, target_host, target_id) VALUES (%s, {_NOW}, %s, %s, %s, %s)",
                (request_id, self._broker.host, by_id, host, target_id),
            )
            conn.execute("SELECT pg_notify(%s, %s)", (hostnames.channel(host), f"kill {request_id}"))

    def _read_answer(self, request_id: str, deadline: bool = False) -> None:
        d = self._registration.run(self._thd_answer, request_id)
        d.addCallback(self._answered, request_id, deadline)
        d.addErrback(lambda f: self._answered(None, request_id, deadline))

    def _thd_answer(self, conn: Any, request_id: str) -> Any:
        return conn.execute("SELECT outcome, detail FROM kill_requests WHERE id = %s AND done_at IS NOT NULL",
                            (request_id,)).fetchone()

    def _answered(self, row: Any, request_id: str, deadline: bool) -> None:
        waiting = self._waiting.get(request_id)
        if waiting is None or waiting.called:
            return
        if row is not None:
            waiting.callback((row[0], row[1]))
        elif deadline:
            waiting.callback(("unknown", "the target's host has not answered the kill request in time; "
                                         "see `claude-peers status` there"))

    # --- notifications --------------------------------------------------------------------

    def notice(self, rest: str) -> None:
        """``kill <id>`` (a request for this host) or ``killed <id>`` (an answer to ours)."""
        request_id = rest.strip()
        if request_id.startswith("done "):
            self._read_answer(request_id[5:])
        else:
            self._carry_out(request_id)

    def catch_up(self) -> None:
        """After a (re)connect: open requests for this host, and answers we may have missed."""
        d = self._registration.run(self._thd_open)
        d.addCallback(lambda ids: [self._carry_out(request_id) for request_id in ids])
        d.addErrback(lambda f: None)
        for request_id in list(self._waiting):
            self._read_answer(request_id)

    def _thd_open(self, conn: Any) -> list[str]:
        with conn.transaction():
            conn.execute(
                "UPDATE kill_requests SET outcome = 'expired', detail = 'the request waited too long', "
                f"done_at = {_NOW} WHERE target_host = %s AND done_at IS NULL AND at < {_NOW} - %s",
                (self._broker.host, EXPIRE_SECONDS),
            )
            rows = conn.execute("SELECT id FROM kill_requests WHERE target_host = %s AND done_at IS NULL",
                                (self._broker.host,)).fetchall()
        return [row[0] for row in rows]

    # --- carrying out a request of another host --------------------------------------------------

    @inlineCallbacks
    def _carry_out(self, request_id: str) -> Any:
        if request_id in self._running:
            return
        self._running.add(request_id)
        try:
            row = yield self._registration.run(self._thd_claim, request_id)
            if row is None:
                return
            by_host, by_id, target_id = row
            try:
                actor = self._broker.actors.get(target_id)
                if actor is None:
                    raise KillRefused(f"no peer {target_id} on host {self._broker.host}")
                outcome, _, detail = yield self._broker.kill_here(actor, f"{by_id}@{by_host}")
            except KillRefused as exc:
                outcome, detail = "refused", str(exc)
            yield self._registration.run(self._thd_done, request_id, by_host, outcome, detail)
        except Exception:
            self.log.failure("carrying out kill request {id}", id=request_id)
        finally:
            self._running.discard(request_id)

    def _thd_claim(self, conn: Any, request_id: str) -> Any:
        return conn.execute(
            "SELECT by_host, by_id, target_id FROM kill_requests WHERE id = %s AND target_host = %s AND done_at IS NULL",
            (request_id, self._broker.host),
        ).fetchone()

    def _thd_done(self, conn: Any, request_id: str, by_host: str, outcome: str, detail: str) -> None:
        with conn.transaction():
            conn.execute("SET LOCAL synchronous_commit = on")
            conn.execute(f"UPDATE kill_requests SET outcome = %s, detail = %s, done_at = {_NOW} WHERE id = %s",
                         (outcome, detail, request_id))
            conn.execute("SELECT pg_notify(%s, %s)", (hostnames.channel(by_host), f"kill done {request_id}"))
