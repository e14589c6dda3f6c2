"""Model-based test of the broker through its real wire (hypothesis stateful testing).

What runs for real: :class:`BrokerProtocol` (the AMP responders), :class:`Broker`, the peer
actors, the :class:`Store` with its SQL and group commit, over a real SQLite file, and again
over a real PostgreSQL database (a fresh schema per example on the run's own server; fewer,
shorter examples in the quick suite, a long run in the slow one). Clients
are real ``amp.AMP`` protocols joined to the broker by ``twisted.test.iosim`` (no sockets,
no reactor): every call is answered by ``pump.flush()``.

What is stood in for:
- the kernel's credentials (SO_PEERCRED): an injected function returning the bridge's pid;
- the process table: :class:`FakeProcesses` (agents start and die when the test says);
- time: a ``Clock`` (reaping and delivery waits run when the test advances it);
- adbapi's thread pool: :class:`QueuedPool` holds each interaction in FIFO order, as adbapi's
  one thread does, and runs it (on one real sqlite3 connection, commit or rollback) when the
  model says. Moving bytes on the connections and running database work are interleaved at
  random (seeded by hypothesis), so reads are issued while writes are still queued or
  committing. Hypothesis drives examples synchronously and cannot wait on the (asyncio)
  reactor, hence no real thread; the SQL, the group commit and the database file are real.

Some bridges are "slow": they answer pushes only when the model says, possibly just as their
agent's next bridge registers (as at compaction). This is what finds the read-overtakes-the-
acknowledgement race fixed in ``Store._read`` (the long run finds it when the fix is undone).

A broker restart abandons the broker, its connections and its SQLite connection without any
clean shutdown (as ``kill -9`` would) and starts a new Broker and Store over the same file.

After every step the model is checked: every message whose Send was answered is either
acknowledged or still unread in the store, in the order the broker accepted it; no push ever
carries an id the broker had already been told was shown; pushes on one connection are in
id order; ids and names never change; gone peers stay gone and are never listed.

Where the parts are: the stand-ins and the plumbing in ``model_wire.py``; the rules for
sending to many, groups and claims in ``model_coord.py``, for replies and waits in
``model_threads.py``; the core rules and the model's view here.
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (Bundle, RuleBasedStateMachine, consumes, initialize, invariant, rule,
                                 run_state_machine_as_test)

from claudepeers.wire import commands as wire
from claudepeers.broker.records import GONE, OFFLINE, ONLINE

from model_coord import CoordRules
from model_threads import ThreadRules
from model_wire import Agent, CallFailed, ModelPlumbing

#: Examples and steps of the default run; the slow suite's soak of the model uses more.
EXAMPLES = int(os.environ.get("CP_MODEL_EXAMPLES", "40"))
STEPS = int(os.environ.get("CP_MODEL_STEPS", "40"))
#: The same on PostgreSQL: a round trip to the server per statement makes each step dearer.
PG_EXAMPLES = int(os.environ.get("CP_MODEL_PG_EXAMPLES", "4"))
PG_STEPS = int(os.environ.get("CP_MODEL_PG_STEPS", "25"))


class BrokerModel(CoordRules, ThreadRules, ModelPlumbing, RuleBasedStateMachine):
    """The broker against a model of what it promised (the plumbing: ``model_wire.py``)."""

    agents = Bundle("agents")

    # --- rules -------------------------------------------------------------------------------

    @initialize(seed=st.integers(0, 2**32 - 1))
    def interleaving(self, seed: int) -> None:
        """Choose how network bytes and database work interleave in this example."""
        self.rng = random.Random(seed)

    @rule(target=agents, cwd=st.sampled_from(["/w/api", "/w/web"]), delivery=st.sampled_from(["push", "inline"]),
          slow=st.booleans())
    def new_agent(self, cwd: str, delivery: str, slow: bool) -> Agent:
        """An agent session starts and its bridge registers: a new id, a name unique among live peers."""
        agent = Agent(len(self.all_agents), self.next_pid, self.next_pid + 1, 100.0 + self.next_pid, cwd, delivery,
                      slow=slow and delivery == "push")
        self.next_pid += 10
        self.processes.spawn(agent.agent_pid, agent.start)
        self.processes.spawn(agent.bridge_pid, agent.start + 1, parent=agent.agent_pid)
        answer = self._register(agent)
        assert not answer["resumed"]
        assert answer["peer_id"] not in self.gone_ids
        assert all(answer["peer_id"] != other.peer_id for other in self.all_agents)
        agent.peer_id, agent.name = answer["peer_id"], answer["name"]
        self.sent[agent.peer_id] = []
        self.all_agents.append(agent)
        return agent

    @rule(agent=agents)
    def disconnect(self, agent: Agent) -> None:
        """The bridge's connection drops while the agent lives (MCP server restart)."""
        self._drop(agent)

    @rule(agent=agents)
    def reconnect(self, agent: Agent) -> None:
        """A new bridge of the same agent registers: same id, same name, backlog pushed again."""
        if not agent.alive:
            return
        self._drop(agent)
        answer = self._register(agent)
        assert answer["resumed"]
        assert (answer["peer_id"], answer["name"]) == (agent.peer_id, agent.name)

    @rule(sender=agents, recipient=agents, by_name=st.booleans(), body=st.text(min_size=1, max_size=40),
          times=st.integers(1, 3), then=st.sampled_from(["wait", "answer", "answer-and-replace"]))
    def send(self, sender: Agent, recipient: Agent, by_name: bool, body: str, times: int, then: str) -> None:
        """A connected peer sends (``times`` times); each answer is truthful, each message committed.
        A slow recipient then answers its pushes, or answers them as its next bridge registers."""
        for _ in range(times):
            self._send_one(sender, recipient, by_name, body)
        if then != "wait":
            self.answer_held_pushes(recipient, replace=then == "answer-and-replace")

    def _send_one(self, sender: Agent, recipient: Agent, by_name: bool, body: str) -> None:
        if sender.client is None or not body.strip():
            return
        live_names = {a.name for a in self.live() if a is not recipient}
        target = recipient.name if by_name and recipient.alive and recipient.name else recipient.peer_id
        if target in live_names and not recipient.alive:
            target = recipient.peer_id
        try:
            answer = self.call(sender, wire.Send, to=target, body=body)
        except CallFailed as error:
            if sender is recipient or "\x00" in body:  # a body may not hold U+0000 (PostgreSQL's text cannot)
                assert error.failure.check(wire.InvalidArgument), error
            else:
                assert not recipient.alive, f"send to live {recipient.peer_id} failed: {error}"
                assert error.failure.check(wire.PeerGone), error
            return
        assert sender is not recipient and recipient.alive and "\x00" not in body
        assert answer["to_id"] == recipient.peer_id
        assert answer["to_name"] == recipient.name
        expected = ("shown" if recipient.client is not None and recipient.delivery == "push"
                    and not recipient.slow else "queued")
        assert answer["status"] == expected, answer
        ids = self.sent[recipient.peer_id]
        assert not ids or answer["message_id"] > ids[-1], "ids grow in the order the broker accepts"
        ids.append(answer["message_id"])
        assert answer["thread_id"] == answer["message_id"], "a first message is its own thread"
        self.threads[answer["message_id"]] = (sender.peer_id, recipient.peer_id, answer["message_id"])

    @rule(agent=agents)
    def fetch_and_acknowledge(self, agent: Agent) -> None:
        """The agent checks its messages: the unread ones, in order; acknowledging shows them."""
        if agent.client is None:
            return
        answer = self.call(agent, wire.FetchUnread, limit=1000)
        ids = [m["id"] for m in answer["messages"]]
        assert ids == self.unacked(agent), (ids, self.unacked(agent))
        if ids:
            self.shown(agent, ids)
            acked = self.call(agent, wire.Acknowledge, message_ids=ids)
            assert acked["acknowledged"] == len(ids)

    @rule(agent=agents, replace=st.booleans())
    def answer_held_pushes(self, agent: Agent, replace: bool) -> None:
        """A slow bridge answers its held pushes ``shown``; with ``replace``, the agent's next
        bridge registers at once (as at compaction), while those acknowledgements are still
        waiting for their commit."""
        if agent.client is None or not agent.client.held:
            return
        held, agent.client.held = agent.client.held, []
        ids = [i for push, _ in held for i in push]
        self.shown(agent, [i for i in ids if i not in agent.shown_ids])  # the bridge dedups
        for push, answer in held:
            answer.callback({"shown": [True] * len(push)})
        if not (replace and agent.alive):
            self.flush()
            return
        self.flush(database=False)  # the answers reach the broker first
        assert agent.pump is not None
        self.retired.append(agent.pump)
        answer = self._register(agent)
        assert answer["resumed"] and (answer["peer_id"], answer["name"]) == (agent.peer_id, agent.name)

    @rule(agent=consumes(agents))
    def agent_dies(self, agent: Agent) -> None:
        """The agent process ends: its bridge goes with it and the reaper marks the peer gone."""
        if not agent.alive:
            return
        agent.alive = False
        self.processes.end(agent.agent_pid)
        self.processes.end(agent.bridge_pid)
        self._drop(agent)
        self.clock.advance(self.limits.reap_interval_seconds)
        self.flush()
        self.gone_ids.add(agent.peer_id or "")

    @rule()
    def restart_broker(self) -> None:
        """The broker dies without cleanup (kill -9) and a new one opens the same database."""
        self.broker.stop()  # its reaper shares our Clock; a dead process runs nothing
        for agent in self.all_agents:
            # Abandoned, not closed: the old broker never hears of it, as after kill -9.
            agent.client, agent.pump = None, None
        self.retired = []
        assert self.pool is not None
        self.pool.close()
        self.restarts += 1
        self._start_broker()

    @rule(agent=agents)
    def list_peers(self, agent: Agent) -> None:
        """list_peers never shows the caller nor a gone peer, and shows every other live one."""
        if agent.client is None:
            return
        listed = {p["id"] for p in self.call(agent, wire.ListPeers, scope="machine")["peers"]}
        assert agent.peer_id not in listed
        assert not listed & self.gone_ids
        assert listed == {a.peer_id for a in self.live() if a is not agent}

    @rule(seconds=st.sampled_from([0.5, 2.0, 30.0]))
    def time_passes(self, seconds: float) -> None:
        """Time passes (delivery waits, reaping)."""
        self.clock.advance(seconds)
        self.flush()

    # --- the model's view --------------------------------------------------------------------

    def unacked(self, agent: Agent) -> list[int]:
        """What the model says is still unread for ``agent``."""
        return [i for i in self.sent.get(agent.peer_id or "", []) if i not in self.acked]

    @invariant()
    def no_violation_seen_by_clients(self) -> None:
        """No push of a shown id, no push out of order, nothing shown twice."""
        assert not self.violations, self.violations

    @invariant()
    def store_holds_exactly_the_unacknowledged_mail(self) -> None:
        """Nothing acknowledged to a sender is lost: unread in the store == model, in order."""
        for agent in self.all_agents:
            stored = self.store.unread(agent.peer_id)
            self.flush()
            assert stored.called
            assert [m.id for m in stored.result] == self.unacked(agent), agent.peer_id

    @invariant()
    def connected_bridges_were_pushed_all_their_mail(self) -> None:
        """Online push bridges have nothing unread; inline and slow ones were pushed all of it,
    but what queues behind a push a slow bridge has not answered yet."""
        for agent in self.connected():
            if agent.delivery == "push" and not agent.slow:
                assert self.unacked(agent) == []
            else:
                client = agent.client
                assert client is not None
                waiting = set(self.unacked(agent)) - set(client.pushed)
                # One push is in flight at a time: only mail behind an unanswered push waits.
                assert not waiting or client.held, (waiting, client.pushed)
                assert all(i > max(client.pushed, default=0) for i in waiting)
            # Sends are answered in the same flush as their push: every pushed id was sent to it.
            assert set(agent.client.pushed) <= set(self.sent[agent.peer_id])  # type: ignore[union-attr,index]

    @invariant()
    def states_ids_and_names_hold(self) -> None:
        """online/offline/gone as the model says; gone is final; live names are unique."""
        actors = self.broker.actors
        for agent in self.all_agents:
            actor = actors[agent.peer_id]  # type: ignore[index]
            expected = GONE if not agent.alive else ONLINE if agent.client is not None else OFFLINE
            assert actor.state == expected, (agent.peer_id, actor.state, expected)
            assert actor.name == agent.name
        live_names = [a.name for a in actors.values() if a.state != GONE]
        assert len(live_names) == len(set(live_names))


BrokerModel.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
#: Collected by pytest: the model-based test of the broker's wire.
TestBrokerModel = BrokerModel.TestCase


@pytest.mark.slow
def test_broker_model_long_run() -> None:
    """The same model, 500 sequences of up to 80 steps (slow suite)."""
    run_state_machine_as_test(BrokerModel, settings=settings(
        max_examples=500, stateful_step_count=80, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))


class PostgresBrokerModel(BrokerModel):
    """The same model with the Store on PostgreSQL: a fresh schema of the run's server per example."""

    server: Any = None  # set by the tests below from the pg_server fixture

    def _make_database(self) -> str:
        self.schema = self.server.fresh_schema()
        return self.server.schema_dsn(self.schema)

    def _drop_database(self) -> None:
        self.server.drop_schema(self.schema)


def _run_on_postgresql(server: Any, examples: int, steps: int) -> None:
    PostgresBrokerModel.server = server
    run_state_machine_as_test(PostgresBrokerModel, settings=settings(
        max_examples=examples, stateful_step_count=steps, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))


def test_broker_model_on_postgresql(pg_server: Any) -> None:
    """The model with the Store on PostgreSQL, shortened for the quick suite (CP_MODEL_PG_*)."""
    _run_on_postgresql(pg_server, PG_EXAMPLES, PG_STEPS)


@pytest.mark.slow
def test_broker_model_long_run_on_postgresql(pg_server: Any) -> None:
    """The model on PostgreSQL, 100 sequences of up to 60 steps (slow suite)."""
    _run_on_postgresql(pg_server, 100, 60)
