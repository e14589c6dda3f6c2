"""The AMP responders of tool approvals, mixed into the broker's connection protocol.

Kept apart from :mod:`.protocol` (which stays a list of thin responders for the peer
commands): :class:`ApprovalCommands` is a ``CommandLocator`` whose responders Twisted's
metaclass merges into :class:`~claudepeers.broker.protocol.BrokerProtocol`. It uses what that
protocol has: ``broker``, ``creds`` (the kernel's view of the connection), ``actor``, ``bridge``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.protocols import amp
from twisted.python.failure import Failure

from claudepeers.broker import operator
from claudepeers.common.errors import InvalidArgument, NotRegistered, PermissionDenied
from claudepeers.wire import commands as wire


class ApprovalCommands(amp.CommandLocator):
    """Responders: PermissionRequest, PermissionEnded (bridges); ListApprovals, AnswerApproval (the person)."""

    broker: Any
    creds: Any
    actor: Any
    bridge: bool

    def _asking_bridge(self) -> Any:
        """The peer of this connection, when this connection is the bridge taking its pushes."""
        actor = self.actor
        if actor is None:
            raise NotRegistered("register first (only a peer's bridge relays its permission prompts)")
        if not self.bridge or actor.connection is not self:
            raise InvalidArgument("only the bridge that takes this peer's pushes may relay its permission prompts")
        return actor

    @wire.PermissionRequest.responder
    def permission_request(self, request_id: str, tool_name: str, description: str, input_preview: str) -> dict:
        """A permission prompt of this bridge's agent: pending until answered or ended."""
        actor = self._asking_bridge()
        self.broker.approvals.ask(actor.id, self, request_id, tool_name, description, input_preview)
        return {}

    @wire.PermissionEnded.responder
    def permission_ended(self, request_id: str, reason: str) -> dict:
        """The tool call of a pending request ended in the agent (answered in its terminal)."""
        actor = self._asking_bridge()
        return {"ended": self.broker.approvals.ended(actor.id, request_id, reason)}

    @wire.ListApprovals.responder
    def list_approvals(self) -> dict:
        """Every pending approval, oldest first."""
        return {"approvals": self.broker.approvals.pending()}

    @wire.AnswerApproval.responder
    def answer_approval(self, request: str, behavior: str) -> Deferred:
        """The person's allow or deny; refused (and recorded) for an agent's process tree."""
        approvals = self.broker.approvals
        if behavior not in ("allow", "deny"):
            raise InvalidArgument(f"behavior must be allow or deny, not {behavior!r}")
        try:
            who = operator.require_operator(self.broker, self.creds, f"{behavior} a tool request")
        except PermissionDenied as error:
            refusal = error  # the except clause unbinds its own name
            d = approvals.refused(request, behavior, str(refusal).split(": ", 1)[-1])
            return d.addCallback(lambda _: Failure(refusal))
        by = f"the operator, {who},"
        return approvals.answer(request, behavior, by).addCallback(
            lambda result: {"approval": result[0], "detail": result[1]})

    # --- the remote call to a bridge, and the end of a connection -------------------------------

    def permission_answer(self, request_id: str, behavior: str) -> Deferred:
        """Hand an answer to this bridge; fires with True once it wrote the line to its agent."""
        if getattr(self, "closed", False):
            return fail(ConnectionError("the bridge's connection has closed"))
        d = self.callRemote(wire.PermissionAnswer, request_id=request_id, behavior=behavior)  # type: ignore[attr-defined]
        return d.addCallback(lambda answer: bool(answer["written"]))

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 - Twisted's name
        """The requests this bridge relayed end with its connection."""
        super().connectionLost(reason)  # type: ignore[misc]
        self.broker.approvals.connection_closed(self)
