"""Rules of the broker model (``tests/test_model.py``) for replies and waits (issue 14).

A mixin of ``BrokerModel``, as ``model_coord.CoordRules`` is: it records the thread of every
answered Send, replies within and across threads, waits for replies, and checks that a wait
returns only replies of its own thread.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, invariant, rule

from claudepeers.wire import commands as wire

from model_wire import Agent, CallFailed, ModelBridge


class ThreadRules:
    """Replies and waits, over the model's agents and connections."""

    agents = Bundle("agents")

    def _init_threads(self) -> None:
        #: message id -> (from peer, to peer, thread id) of every message whose Send was answered
        self.threads: dict[int, tuple[str | None, str | None, int]] = {}
        #: ids shown to their agents by a wait_for_reply (a later push of one is answered shown)
        self.wait_shown: set[int] = set()
        self.thread_violations: list[str] = []
        #: (answer, agent, id waited after) of the waits answered since the last check
        self.wait_answers: list[tuple[dict[str, Any], Agent, int]] = []

    def _mail_of(self, agent: Agent, own: bool) -> list[int]:
        return sorted(i for i, (sender, to, _) in self.threads.items() if (agent.peer_id in (sender, to)) == own)

    @rule(sender=agents, recipient=agents, pick=st.integers(0, 3), foreign=st.sampled_from([False, False, True]),
          answer_sender=st.booleans(), body=st.text(min_size=1, max_size=20))
    def reply(self, sender: Agent, recipient: Agent, pick: int, foreign: bool, answer_sender: bool, body: str) -> None:
        """A peer replies to one of the latest messages of its own mail (it joins that thread),
        mostly to the other side of it; a reply to a message of others is refused as unknown."""
        pool = self._mail_of(sender, own=not foreign)
        if not pool:
            return
        reply_to = pool[-1 - pick % len(pool)]
        other = self.threads[reply_to][0] if self.threads[reply_to][1] == sender.peer_id else self.threads[reply_to][1]
        if answer_sender and not foreign:
            recipient = next((a for a in self.all_agents if a.peer_id == other), recipient)
        if sender.client is None or sender is recipient or not recipient.alive or not body.strip():
            return
        try:
            answer = self.call(sender, wire.Send, to=recipient.peer_id, body=body, reply_to=reply_to)
        except CallFailed as error:
            if "\x00" in body and error.failure.check(wire.InvalidArgument):
                return  # a body may not hold U+0000 (PostgreSQL's text cannot), a reply's neither
            assert foreign and error.failure.check(wire.UnknownMessage), error
            return
        assert not foreign, f"a reply to #{reply_to}, not {sender.peer_id}'s, was accepted"
        assert "\x00" not in body, "a reply holding U+0000 was accepted"
        assert answer["thread_id"] == self.threads[reply_to][2]
        assert answer["status"] in ("shown", "queued"), answer
        self.sent[recipient.peer_id].append(answer["message_id"])  # type: ignore[index]
        self.threads[answer["message_id"]] = (sender.peer_id, recipient.peer_id, answer["thread_id"])

    @rule(agent=agents, recipient=agents, pick=st.integers(0, 3), timeout=st.sampled_from([0.0, 1.0, 30.0]),
          delegate=st.booleans(), answered=st.booleans())
    def wait_for_reply(self, agent: Agent, recipient: Agent, pick: int, timeout: float, delegate: bool,
                       answered: bool) -> None:
        """A peer waits for the replies after one of the latest messages of its own mail (with
        ``delegate``, a task it sends first, which the recipient may answer at once); the answer
        (now, when a reply comes, or at the timeout) is checked and acknowledged as the bridge
        would."""
        if delegate:
            self._send_one(agent, recipient, False, "a task")
        pool = self._mail_of(agent, own=True)
        if agent.client is None or not pool:
            return
        after = pool[-1 - pick % len(pool)]
        client = agent.client
        d = client.callRemote(wire.WaitForReply, message_id=after, timeout_seconds=timeout)
        d.addCallbacks(self._wait_answered, lambda failure: None, callbackArgs=(agent, client, after))
        self.flush()
        if delegate and answered and self.threads[after][1] == recipient.peer_id:
            self.reply(recipient, agent, 0, False, True, "the result")

    def _wait_answered(self, answer: dict[str, Any], agent: Agent, client: ModelBridge, after: int) -> None:
        # Checked by the invariant: a reply's Send may not be answered yet (its wait is answered first).
        self.wait_answers.append((answer, agent, after))
        for message in answer["shown_before"]:
            if message["id"] not in self.acked:
                self.thread_violations.append(f"#{message['id']} named as shown before, but it was not")
        fresh = [m["id"] for m in answer["messages"] if m["id"] not in agent.shown_ids]
        if fresh and client is agent.client:
            acknowledged = client.callRemote(wire.Acknowledge, message_ids=fresh)
            acknowledged.addCallbacks(lambda _: self._wait_shown(agent, fresh), lambda failure: None)

    def _wait_shown(self, agent: Agent, ids: list[int]) -> None:
        """The bridge showed a wait's replies in the tool's result and the broker has the acknowledgement."""
        self.wait_shown.update(ids)
        self.shown(agent, ids)

    @invariant()
    def waits_returned_only_replies_of_their_own_thread(self) -> None:
        """Every message a wait returned (or named) is a reply to its peer, in its thread, after the
        message waited on; every reply it named as shown before had been."""
        answers, self.wait_answers = self.wait_answers, []
        for answer, agent, after in answers:
            thread = self.threads[after][2]
            if answer["thread_id"] != thread:
                self.thread_violations.append(f"wait on #{after} answered for thread {answer['thread_id']}, not {thread}")
            for message in answer["messages"] + answer["shown_before"]:
                known = self.threads.get(message["id"])
                if known is None or known[2] != thread or known[1] != agent.peer_id or message["id"] <= after:
                    self.thread_violations.append(f"wait on #{after} (thread {thread}) of {agent.peer_id} returned "
                                                  f"#{message['id']} ({known})")
        assert not self.thread_violations, self.thread_violations
