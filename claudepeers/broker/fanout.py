"""Messages to many recipients: ``scope:repo``, ``scope:directory``, ``scope:machine``,
``scope:network`` or ``group:<name>``.

Each recipient gets its own stored message with its own state, exactly as if it had been
sent alone (pushed, acknowledged, queued while offline, pushed again after a reconnect);
the sender gets one answer listing every recipient's outcome: ``shown``, ``woke``,
``queued`` (the words of a single send) or ``refused`` with the reason (that recipient's
inbox is full, say, while the others got it). The sender is never among its own
recipients; gone peers are left out; offline ones are included (their mail queues).
A fan-out is bounded (``max_fanout``) and counts one message per recipient against the
sender's rate. Logic layer: no AMP, no SQL.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail

from claudepeers.broker.mail import check_body
from claudepeers.broker.peers import PeerActor
from claudepeers.broker.records import CLI_ID, GONE, Message, NewMessage
from claudepeers.common.errors import InvalidArgument, LimitExceeded, NotRegistered, UnknownPeer


SCOPE_PREFIX = "scope:"
GROUP_PREFIX = "group:"
#: The scopes a message can go to. ``network`` is every host's peers (DESIGN 7); while a
#: broker serves one host it is the same as ``machine``.
FANOUT_SCOPES = ("repo", "directory", "machine", "network")
REFUSED = "refused"
#: A recipient's key is the sender's client key, this separator and the recipient's id.
KEY_SEPARATOR = ">"
MAX_FANOUT_KEY_CHARS = 64 - len(KEY_SEPARATOR) - 16


def is_fanout(target: str) -> bool:
    """True when ``target`` names many recipients (a scope or a group), not one peer."""
    return isinstance(target, str) and target.strip().startswith((SCOPE_PREFIX, GROUP_PREFIX))


def repo_key(record: Any) -> str:
    """What makes two peers' repositories the same (worktrees included): the common git dir."""
    return record.git_common_dir or record.cwd


# ``broker`` is core.Broker, typed Any: core imports this module, not the other way round.
def scope_members(broker: Any, caller: PeerActor | None, scope: str) -> list[PeerActor]:
    """Live peers (online or offline) in ``scope`` seen from ``caller``, never the caller.

    The one place that says who is in a scope for a fan-out; a broker of several hosts
    extends ``network`` (every host) and ``machine`` (this host) here.
    """
    if scope not in FANOUT_SCOPES:
        raise InvalidArgument(f"scope:{scope} is not a scope; use one of "
                              + ", ".join(SCOPE_PREFIX + s for s in FANOUT_SCOPES) + f" or {GROUP_PREFIX}<name>")
    if scope in ("repo", "directory") and caller is None:
        raise NotRegistered(f"scope:{scope} needs a registered peer (whose {scope} is it?); use scope:machine")
    chosen = []
    for actor in broker.actors.values():
        record = actor.record
        if actor is caller or record.state == GONE:
            continue
        if scope == "machine" and record.host != broker.host:
            continue
        if scope == "directory" and record.cwd != caller.record.cwd:  # type: ignore[union-attr]
            continue
        if scope == "repo" and repo_key(record) != repo_key(caller.record):  # type: ignore[union-attr]
            continue
        chosen.append(actor)
    return chosen


class FanOut:
    """Sends one message to each peer a scope or a group names."""

    def __init__(self, broker: Any) -> None:
        self._broker = broker

    def recipients(self, caller: PeerActor | None, target: str) -> list[PeerActor]:
        """The peers ``target`` names (sorted by name), never the caller nor a gone peer."""
        target = target.strip()
        if target.startswith(SCOPE_PREFIX):
            chosen = scope_members(self._broker, caller, target[len(SCOPE_PREFIX):])
        else:
            name = target[len(GROUP_PREFIX):]
            groups = self._broker.coordination.groups
            groups.check_name(name)
            actors = self._broker.actors
            chosen = [actors[i] for i in groups.members(name)
                      if i in actors and actors[i] is not caller and actors[i].state != GONE]
        return sorted(chosen, key=lambda actor: (actor.name, actor.id))

    def send(self, sender: PeerActor | None, target: str, body: str, client_key: str | None = None,
             verified: bool = True) -> Deferred:
        """Store one message per recipient; fires with ``{"target", "recipients": [...]}``,
        one outcome each (``message_id``, ``to_id``, ``to_name``, ``status``, ``detail``),
        once every recipient's outcome is known (at most the delivery wait)."""
        try:
            plan = self._plan(sender, target, body, client_key, verified)
        except Exception:
            return fail()
        outcomes: list[Deferred] = []
        writes = [(new, None if client_key is None else f"{client_key}{KEY_SEPARATOR}{recipient.id}")
                  for recipient, new, refusal in plan if refusal is None]
        committed = iter(self._broker.store.add_messages_together(writes))  # one group commit
        for recipient, new, refusal in plan:
            if refusal is not None:
                outcomes.append(Deferred())
                outcomes[-1].callback(_outcome(None, recipient, REFUSED, refusal))
                continue
            answered: Deferred = Deferred()
            stored = next(committed)
            if client_key is None:
                stored.addCallback(lambda m: (m, True))
            stored.addCallback(self._stored, recipient, answered)
            stored.addErrback(lambda failure, d=answered, r=recipient: d.called or d.callback(
                _outcome(None, r, REFUSED, f"not stored: {failure.getErrorMessage()}")))
            outcomes.append(answered)
        done = DeferredList(outcomes, consumeErrors=True)
        return done.addCallback(lambda results: {
            "target": target.strip(), "recipients": [value for ok, value in results if ok]})

    def _plan(self, sender: PeerActor | None, target: str, body: str, client_key: str | None,
              verified: bool) -> list[tuple[PeerActor, NewMessage | None, str | None]]:
        """Check the send; each recipient with its message, or the reason it is refused."""
        broker = self._broker
        limits = broker.limits
        if client_key is not None and not (0 < len(client_key) <= MAX_FANOUT_KEY_CHARS and client_key.isprintable()):
            raise InvalidArgument(f"client_key of a message to many must be 1 to {MAX_FANOUT_KEY_CHARS} printable characters")
        size = check_body(body, limits.max_body_bytes, broker.counters)
        recipients = self.recipients(sender, target)
        if not recipients:
            raise UnknownPeer(f"{target.strip()} names no peer but you (nobody else is there); see list_peers"
                              + (" and list_groups" if target.strip().startswith(GROUP_PREFIX) else ""))
        if len(recipients) > limits.max_fanout:
            raise LimitExceeded(f"{target.strip()} names {len(recipients)} peers; one message may go to at most "
                                f"{limits.max_fanout} (max_fanout, CLAUDE_PEERS_MAX_FANOUT): send to a smaller "
                                "scope or a group")
        now = broker.now()
        sender_key = sender.id if sender is not None else CLI_ID
        if not broker.rate.allow(sender_key, now, cost=len(recipients)):
            broker.counters["refused"] += 1
            raise LimitExceeded(f"{len(recipients)} messages would pass the limit of {limits.messages_per_minute} a "
                                f"minute from {sender_key} (messages_per_minute, CLAUDE_PEERS_MESSAGES_PER_MINUTE); "
                                "wait and retry")
        if sender is None:
            origin: tuple = (CLI_ID, "cli", "", "", "cli", False)
        else:
            record = sender.record
            origin = (record.id, record.name, record.summary, record.cwd, record.client_type, verified)
        guard = getattr(broker.store, "guard", None)
        plan: list[tuple[PeerActor, NewMessage | None, str | None]] = []
        for recipient in recipients:
            refusal = None
            if recipient.unread >= limits.max_unread:
                refusal = (f"{recipient.name} already has {recipient.unread} unread messages; the limit is "
                           f"{limits.max_unread} (max_unread, CLAUDE_PEERS_MAX_UNREAD)")
            elif guard is not None:
                refusal = guard.room_for(sender_key, recipient.id, recipient.name, size)
            if refusal is not None:
                broker.counters["refused"] += 1
                plan.append((recipient, None, refusal))
            else:
                plan.append((recipient, NewMessage(*origin, recipient.id, body, now, from_host=broker.host), None))
        return plan

    def _stored(self, result: tuple[Message, bool], recipient: PeerActor, answered: Deferred) -> None:
        message, stored_now = result
        if not stored_now:  # a repeat of a send whose outcome the sender never heard
            state = "shown" if message.acked_at is not None else "queued"
            answered.callback(_outcome(message, recipient, state, f"already sent as message {message.id}"))
            return
        broker = self._broker
        broker.counters["sent"] += 1
        guard = getattr(broker.store, "guard", None)
        if guard is not None:
            guard.stored(message.from_id, message.to_id, len(message.body.encode("utf-8")))

        def outcome(status: str, detail: str) -> None:
            if status in ("shown", "woke"):
                broker.counters[status] = broker.counters.get(status, 0) + 1
            broker.emit("message", message.from_id, f"{message.from_name} -> {recipient.name}: {status}",
                        message_id=message.id, to_id=recipient.id)
            answered.callback(_outcome(message, recipient, status, detail))

        recipient.accept(message, outcome)


def _outcome(message: Message | None, recipient: PeerActor, status: str, detail: str) -> dict[str, Any]:
    return {"message_id": message.id if message is not None else None, "to_id": recipient.id,
            "to_name": recipient.name, "status": status, "detail": detail}
