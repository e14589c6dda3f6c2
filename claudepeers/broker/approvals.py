"""Pending tool approvals: the permission prompts Claude Code relays through our bridges.

Claude Code (2.1.197 and 2.1.332, with channels and the ``claude/channel/permission``
capability declared) sends its channel server ``notifications/claude/channel/permission_request``
whenever it shows a permission dialog; the first answer wins, from the terminal or from
``notifications/claude/channel/permission``. The bridge forwards each request here
(``PermissionRequest``); the person lists them (``claude-peers approvals``, the dashboard)
and answers one; the answer goes back to the bridge that asked (``PermissionAnswer``).

A request is pending from the bridge's ``PermissionRequest`` until one of:

- an answer (:meth:`Approvals.answer`), recorded in the event log (kind ``approval``,
  stored like the kill audit, shown by ``claude-peers log``);
- the bridge saw the tool call end in the agent's transcript (``PermissionEnded``): the
  person answered in the terminal first (Claude Code tells the channel nothing then);
- the bridge's connection closed (its agent exited, or a newer bridge took over and sends
  what is still pending again).

Pure logic (no AMP, no SQL): the connection object only needs ``permission_answer(request_id,
behavior) -> Deferred[bool]``; the store only ``add_event``. Observers (the dashboard)
:meth:`~Approvals.subscribe` to changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.logger import Logger

from claudepeers.broker.records import iso
from claudepeers.common.errors import (
    AmbiguousPeer, BrokerUnavailable, InvalidArgument, LimitExceeded, UnknownApproval,
)

BEHAVIORS = ("allow", "deny")
#: Claude Code's ids are five lowercase letters; anything id-like up to 64 characters is taken.
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_TOOL_NAME_CHARS = 200
#: The bridge cuts description and preview to this; longer is refused.
MAX_TEXT_CHARS = 4000
#: Pending requests one peer may hold (Claude Code shows one dialog at a time).
MAX_PENDING_PER_PEER = 32
#: How long an answer waits for the bridge to say it wrote the line to the agent.
ANSWER_TIMEOUT_SECONDS = 5.0
#: Refusals stored per minute at most (an agent retrying in a loop must not fill the database;
#: the rest are counted and the count is stored with the next one).
MAX_STORED_REFUSALS_PER_MINUTE = 20
#: Event kinds: ``approval`` (answers and refusals: stored), ``permission`` (asked, ended: memory only).
ANSWER_EVENT = "approval"
REQUEST_EVENT = "permission"


@dataclass(frozen=True)
class Approval:
    """One pending request of one peer's agent."""

    request_id: str
    peer_id: str
    tool_name: str
    description: str
    input_preview: str
    asked_at: float
    connection: Any = field(compare=False, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        """Unique among pending requests: two agents may draw the same five letters."""
        return (self.peer_id, self.request_id.lower())


Observer = Callable[[str, dict[str, Any]], None]


class Approvals:
    """The broker's registry of pending approvals."""

    log = Logger()

    def __init__(self, clock: Any, store: Any, emit: Callable[..., None], peer_name: Callable[[str], str]) -> None:
        self._clock = clock
        self._store = store
        self._emit = emit
        self._peer_name = peer_name
        self._pending: dict[tuple[str, str], Approval] = {}  # insertion order: oldest first
        self._observers: list[Observer] = []
        self._refusals: list[float] = []  # when the refusals of the last minute were stored
        self._unstored_refusals = 0

    # --- what bridges report ------------------------------------------------------------

    def ask(self, peer_id: str, connection: Any, request_id: str, tool_name: str, description: str,
            input_preview: str) -> Approval:
        """A bridge relays a permission prompt of its agent; the same id again replaces it."""
        _check_request_id(request_id)
        if not tool_name or len(tool_name) > MAX_TOOL_NAME_CHARS or not tool_name.isprintable():
            raise InvalidArgument(f"tool_name must be 1 to {MAX_TOOL_NAME_CHARS} printable characters")
        for label, text in (("description", description), ("input_preview", input_preview)):
            if len(text) > MAX_TEXT_CHARS:
                raise LimitExceeded(f"{label} is {len(text)} characters; at most {MAX_TEXT_CHARS} are kept")
        approval = Approval(request_id, peer_id, tool_name, description, input_preview, self._clock.seconds(),
                            connection)
        if approval.key not in self._pending:
            held = sum(1 for key in self._pending if key[0] == peer_id)
            if held >= MAX_PENDING_PER_PEER:
                raise LimitExceeded(f"peer {peer_id} already has {held} pending approvals (at most "
                                    f"{MAX_PENDING_PER_PEER})")
        self._pending.pop(approval.key, None)
        self._pending[approval.key] = approval
        self._emit(REQUEST_EVENT, peer_id, f"{self._peer_name(peer_id)} asks to use {tool_name} "
                   f"(request {request_id}): {_short(description or input_preview)}")
        self._tell("asked", approval)
        return approval

    def ended(self, peer_id: str, request_id: str, reason: str) -> bool:
        """The bridge saw the request's tool call end (answered in the terminal); True if it was pending."""
        approval = self._pending.pop((peer_id, request_id.lower()), None)
        if approval is None:
            return False
        self._emit(REQUEST_EVENT, peer_id, f"request {request_id} of {self._peer_name(peer_id)} ended: {_short(reason)}")
        self._tell("ended", approval, reason=reason)
        return True

    def connection_closed(self, connection: Any) -> int:
        """A connection closed: its bridge's requests end with it; how many did."""
        gone = [key for key, approval in self._pending.items() if approval.connection is connection]
        for key in gone:
            self._tell("ended", self._pending.pop(key), reason="the bridge disconnected")
        return len(gone)

    # --- what the person sees and does --------------------------------------------------

    def pending(self) -> list[dict[str, Any]]:
        """Every pending request, oldest first, as plain dicts (``request`` is what to type)."""
        return [self._wire(approval) for approval in self._pending.values()]

    def find(self, text: str) -> Approval:
        """The pending request ``text`` names: ``<request id>`` or ``<peer id or name>:<request id>``."""
        text = (text or "").strip()
        peer, _, request_id = text.rpartition(":")
        _check_request_id(request_id)
        matches = [a for a in self._pending.values() if a.request_id.lower() == request_id.lower()
                   and (not peer or peer in (a.peer_id, self._peer_name(a.peer_id)))]
        if not matches:
            listed = ", ".join(self._display(a) for a in self._pending.values()) or "none"
            raise UnknownApproval(f"no pending approval is {text!r} (answered, ended in the terminal, or never "
                                  f"asked); pending: {listed}")
        if len(matches) > 1:
            raise AmbiguousPeer(f"{len(matches)} peers have a pending request {request_id}: name one as "
                                + " or ".join(f"{a.peer_id}:{a.request_id}" for a in matches))
        return matches[0]

    @inlineCallbacks
    def answer(self, request: str, behavior: str, by: str) -> Any:
        """Hand the person's ``allow``/``deny`` to the bridge that asked; record it.

        Fires with (the approval as a dict, a sentence saying what was done). The request
        leaves the list at once (a second answer finds nothing); if the bridge cannot take
        the answer it comes back, and BrokerUnavailable says so.
        """
        if behavior not in BEHAVIORS:
            raise InvalidArgument(f"behavior must be allow or deny, not {behavior!r}")
        approval = self.find(request)
        del self._pending[approval.key]
        shown = self._wire(approval)
        try:
            written = yield _deadline(approval.connection.permission_answer(approval.request_id, behavior),
                                      self._clock, ANSWER_TIMEOUT_SECONDS)
        except Exception as error:
            if not getattr(approval.connection, "closed", False) and approval.key not in self._pending:
                self._pending[approval.key] = approval  # still asked: the person may try again
            yield self._record(approval.peer_id, f"{by} could not {behavior} request {approval.request_id} of "
                               f"{shown['peer_name']} ({approval.tool_name}): the bridge did not take it ({error})")
            raise BrokerUnavailable(f"the bridge of {shown['peer_name']} did not take the answer: {error}") from None
        verb = "allowed" if behavior == "allow" else "denied"
        detail = (f"{verb} {approval.tool_name} for {shown['peer_name']} ({approval.peer_id}), request "
                  f"{approval.request_id}: {_short(approval.description or approval.input_preview)}")
        yield self._record(approval.peer_id, f"{by} {detail}", behavior=behavior, request_id=approval.request_id)
        self._tell("answered", approval, behavior=behavior, by=by)
        if not written:
            detail += " (the agent's pipe was closed: it may not have seen the answer)"
        return shown, detail[0].upper() + detail[1:]

    def refused(self, request: str, behavior: str, why: str) -> Deferred:
        """Record an answer the broker refused (an agent's process tree asked); past
        MAX_STORED_REFUSALS_PER_MINUTE only counted, the count stored with the next one."""
        now = self._clock.seconds()
        self._refusals = [at for at in self._refusals if now - at < 60]
        if len(self._refusals) >= MAX_STORED_REFUSALS_PER_MINUTE:
            self._unstored_refusals += 1
            return succeed(None)
        self._refusals.append(now)
        more, self._unstored_refusals = self._unstored_refusals, 0
        note = f" ({more} more refusals since the last one stored)" if more else ""
        return self._record(None, f"refused to {behavior} {request!r}: {why}{note}")

    # --- observers (the dashboard) ---------------------------------------------------------

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer(change, approval)`` on every change (``asked``, ``ended``,
        ``answered``); returns the function that unsubscribes it."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer) if observer in self._observers else None

    def _tell(self, change: str, approval: Approval, **extra: Any) -> None:
        shown = {**self._wire(approval), **extra}
        for observer in list(self._observers):
            try:
                observer(change, shown)
            except Exception:  # one broken observer must not stop the others
                self.log.failure("approval observer failed; dropping it")
                self._observers.remove(observer)

    # --- internals ---------------------------------------------------------------------------

    def _record(self, peer_id: str | None, detail: str, **extra: Any) -> Deferred:
        """The audit: stored before the answer returns, and in the live event log."""
        at = self._clock.seconds()
        d = self._store.add_event(at, ANSWER_EVENT, peer_id, detail)
        d.addCallback(lambda _: self._emit(ANSWER_EVENT, peer_id, detail, **extra))
        return d

    def _display(self, approval: Approval) -> str:
        same = sum(1 for a in self._pending.values() if a.request_id.lower() == approval.request_id.lower())
        return approval.request_id if same <= 1 else f"{approval.peer_id}:{approval.request_id}"

    def _wire(self, approval: Approval) -> dict[str, Any]:
        return {
            "request": self._display(approval),
            "request_id": approval.request_id,
            "peer_id": approval.peer_id,
            "peer_name": self._peer_name(approval.peer_id),
            "tool_name": approval.tool_name,
            "description": approval.description,
            "input_preview": approval.input_preview,
            "asked_at": iso(approval.asked_at),
            "age_seconds": round(max(0.0, self._clock.seconds() - approval.asked_at), 3),
        }


def _check_request_id(request_id: str) -> None:
    if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
        raise InvalidArgument(f"a request id is 1 to 64 letters, digits, '_' or '-', not {request_id!r}")


def _short(text: str, width: int = 120) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[: width - 1] + "\u2026"


def _deadline(d: Deferred, clock: Any, seconds: float) -> Deferred:
    """``d`` with a deadline on ``clock`` (a Deferred that never fires must not hold the answer)."""
    return d.addTimeout(seconds, clock)
