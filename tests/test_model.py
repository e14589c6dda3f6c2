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
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
import pytest
from hypothesis.stateful import (Bundle, RuleBasedStateMachine, consumes, initialize, invariant, rule,
                                 run_state_machine_as_test)
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test import iosim

from claudepeers.wire import commands as wire
from claudepeers.broker.core import Broker, Credentials
from claudepeers.broker.protocol import BrokerProtocol
from claudepeers.broker.records import GONE, OFFLINE, ONLINE
from claudepeers.common.settings import Limits
from claudepeers.broker.storage import Store, database, prepare

from broker_fakes import FakeProcesses
from engines import is_pg
from model_coord import CoordRules

UID = 4242
#: Examples and steps of the default run; the slow suite's soak of the model uses more.
EXAMPLES = int(os.environ.get("CP_MODEL_EXAMPLES", "40"))
STEPS = int(os.environ.get("CP_MODEL_STEPS", "40"))
#: The same on PostgreSQL: a round trip to the server per statement makes each step dearer.
PG_EXAMPLES = int(os.environ.get("CP_MODEL_PG_EXAMPLES", "4"))
PG_STEPS = int(os.environ.get("CP_MODEL_PG_STEPS", "25"))


class SyncPool:
    """An ``adbapi.ConnectionPool`` stand-in: each interaction runs at once on one connection
    (sqlite3 for a path, psycopg for a PostgreSQL DSN, set up as the real pools set theirs)."""

    def __init__(self, target: Path | str) -> None:
        if is_pg(target):
            import psycopg

            from claudepeers.broker.storage import pgpool

            self.connection = psycopg.connect(str(target))
            pgpool.configure(self.connection)
            self.dbapiName = "psycopg"  # the Store picks its dialect by this, as from adbapi's pool
        else:
            self.connection = sqlite3.connect(str(target))
            database.configure(self.connection)
            self.dbapiName = "sqlite3"
        self.interactions = 0

    def runInteraction(self, fn: Any, *args: Any, **kwargs: Any) -> Deferred:
        """Run ``fn(cursor, ...)`` in a transaction: commit on success, roll back on error."""
        self.interactions += 1
        cursor = self.connection.cursor()
        try:
            result = fn(cursor, *args, **kwargs)
        except Exception:
            self.connection.rollback()
            return fail(Failure())
        self.connection.commit()
        return succeed(result)

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


class QueuedPool(SyncPool):
    """Like adbapi's one-thread pool: interactions wait in FIFO order until the model runs them.

    The model interleaves running them with moving bytes on the connections (seeded by
    hypothesis), so a read can be issued while writes are still queued or committing.
    """

    def __init__(self, target: Path | str) -> None:
        super().__init__(target)
        self.queue: list[tuple[Any, tuple, dict, Deferred]] = []

    def runInteraction(self, fn: Any, *args: Any, **kwargs: Any) -> Deferred:
        """Queue the interaction; it runs (and its Deferred fires) in :meth:`run_one`."""
        done: Deferred = Deferred()
        self.queue.append((fn, args, kwargs, done))
        return done

    def run_one(self) -> bool:
        """Run the oldest queued interaction; False when none is queued."""
        if not self.queue:
            return False
        fn, args, kwargs, done = self.queue.pop(0)
        SyncPool.runInteraction(self, fn, *args, **kwargs).chainDeferred(done)
        return True


class ModelBridge(amp.AMP):
    """A bridge as the broker sees it: answers pushes as shown (push) or held (inline)."""

    def __init__(self, agent: "Agent", machine: "BrokerModel") -> None:
        super().__init__()
        self.agent = agent
        self.machine = machine
        self.pushed: list[int] = []
        self.held: list[tuple[list[int], Deferred]] = []  # slow bridges: pushes not answered yet

    @wire.Deliver.responder
    def deliver(self, messages: list[dict[str, Any]]) -> Any:
        """Record the push, check it against the model, answer per the agent's delivery mode."""
        ids = [message["id"] for message in messages]
        for message_id in ids:
            self.machine.check_push(self.agent, self, message_id)
        self.pushed += ids
        if self.agent.slow:
            answer: Deferred = Deferred()
            self.held.append((ids, answer))
            return answer
        if self.agent.delivery == "push":
            # A reply a wait_for_reply returned is already shown: the bridge answers it so, silently.
            self.machine.shown(self.agent, [i for i in ids if i not in self.machine.wait_shown])
            return {"shown": [True] * len(ids)}
        return {"shown": [False] * len(ids)}

    @wire.ShownElsewhere.responder
    def shown_elsewhere(self, message_ids: list[int]) -> dict:
        """Another client showed these (not used by the model's clients)."""
        return {}

    @wire.Event.responder
    def event(self, event: dict) -> dict:
        """Events are not watched here."""
        return {}

    if hasattr(wire, "Superseded"):

        @wire.Superseded.responder
        def superseded(self, reason: str) -> dict:
            """A newer bridge of the same agent took over (the broker closes this connection next)."""
            return {}


@dataclass
class Agent:
    """One agent session of the model."""

    number: int
    agent_pid: int
    bridge_pid: int
    start: float
    cwd: str
    delivery: str
    slow: bool = False  # a push bridge that answers pushes only when the model says so
    alive: bool = True
    peer_id: str | None = None
    name: str | None = None
    client: ModelBridge | None = None
    pump: iosim.IOPump | None = None
    shown_ids: set[int] = field(default_factory=set)


class CallFailed(Exception):
    """A remote call answered with an AMP error."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.getErrorMessage())
        self.failure = failure


class BrokerModel(CoordRules, RuleBasedStateMachine):
    """The broker against a model of what it promised."""

    agents = Bundle("agents")

    def __init__(self) -> None:
        super().__init__()
        self.base = Path(tempfile.mkdtemp(prefix="cp-model-", dir="/tmp"))
        self.db_path: Path | str = self._make_database()
        prepare(self.db_path)
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.processes = FakeProcesses()
        self.limits = Limits()
        self.all_agents: list[Agent] = []
        self.next_pid = 10_000
        #: peer id -> ids of messages whose Send was answered, in the order accepted
        self.sent: dict[str, list[int]] = {}
        #: ids the broker was told are shown (a push answered shown, or an Acknowledge)
        self.acked: set[int] = set()
        self.gone_ids: set[str] = set()
        self.violations: list[str] = []
        self.restarts = 0
        self.pool: SyncPool | None = None
        self.joining: list[Agent] = []
        self.retired: list[iosim.IOPump] = []  # replaced connections, still flushed
        self.rng = random.Random(0)
        self._init_threads()
        self._start_broker()

    # --- plumbing ----------------------------------------------------------------------------

    def _make_database(self) -> Path | str:
        """Where this example's database is (SQLite: a file in the example's directory)."""
        return self.base / "peers.db"

    def _drop_database(self) -> None:
        """Forget the example's database (the file goes with the directory)."""

    def _start_broker(self) -> None:
        self.pool = QueuedPool(self.db_path)
        self.store = Store(self.pool)
        self.broker = Broker(self.store, self.clock, self.limits, host="modelhost", processes=self.processes)
        started = self.broker.start()
        self.flush()
        assert started.called, "the broker starts once its reads have run"

    def _connect(self, agent: Agent) -> None:
        def server() -> BrokerProtocol:
            return BrokerProtocol(self.broker, credentials=lambda _t: Credentials("unix", agent.bridge_pid, UID),
                                  uid=UID)

        client, _server, pump = iosim.connectedServerAndClient(server, lambda: ModelBridge(agent, self))
        agent.client, agent.pump = client, pump

    def call(self, agent: Agent, command: type[amp.Command], **arguments: Any) -> Any:
        """Call a command on the broker over the agent's connection; raise CallFailed on error."""
        assert agent.client is not None and agent.pump is not None
        outcome: list[Any] = []
        agent.client.callRemote(command, **arguments).addBoth(outcome.append)
        self.flush()
        if not outcome:
            # A Send to a slow bridge waits for its answer up to the delivery wait.
            self.clock.advance(self.limits.delivery_wait_seconds)
            self.flush()
        assert outcome, f"{command.__name__} was not answered"
        if isinstance(outcome[0], Failure):
            raise CallFailed(outcome[0])
        return outcome[0]

    def pumps(self) -> list[iosim.IOPump]:
        """Every connection that may still carry bytes."""
        return [a.pump for a in self.all_agents + self.joining if a.pump is not None] + self.retired

    def flush(self, database: bool = True) -> None:
        """Move bytes and run queued database work, interleaved at random, until all is quiet."""
        while True:
            if database and self.pool is not None and self.pool.queue and self.rng.random() < 0.3:
                self.pool.run_one()
                continue
            if any([pump.pump() for pump in self.pumps()]):
                continue
            if not (database and self.pool is not None and self.pool.run_one()):
                return

    def _register(self, agent: Agent) -> dict[str, Any]:
        self._connect(agent)
        self.joining = [agent]
        return self.call(agent, wire.Register, agent_pid=agent.agent_pid, agent_start=agent.start,
                         client_type="claude-code", cwd=agent.cwd, delivery=agent.delivery,
                         git_root=agent.cwd, git_common_dir=agent.cwd + "/.git")

    def _drop(self, agent: Agent) -> None:
        if agent.client is not None and agent.pump is not None:
            agent.client.transport.loseConnection()
            self.flush()
        agent.client, agent.pump = None, None

    def check_push(self, agent: Agent, client: ModelBridge, message_id: int) -> None:
        """A push: never an id already shown, and in id order on one connection."""
        if message_id in self.acked:
            self.violations.append(f"message {message_id} pushed to {agent.peer_id} after it was shown")
        if client.pushed and message_id <= client.pushed[-1]:
            self.violations.append(f"push order broken for {agent.peer_id}: {message_id} after {client.pushed[-1]}")

    def shown(self, agent: Agent, message_ids: list[int]) -> None:
        """The agent has seen these messages (the client says so to the broker)."""
        for message_id in message_ids:
            if message_id in agent.shown_ids:
                self.violations.append(f"message {message_id} shown twice to {agent.peer_id}")
            agent.shown_ids.add(message_id)
        self.acked.update(message_ids)

    def live(self) -> list[Agent]:
        """Agents whose process runs."""
        return [a for a in self.all_agents if a.alive]

    def connected(self) -> list[Agent]:
        """Agents whose bridge is connected."""
        return [a for a in self.all_agents if a.alive and a.client is not None]

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
            if "\x00" in body:  # refused on both engines (PostgreSQL's text cannot hold it)
                assert error.failure.check(wire.InvalidArgument), error
                return
            if sender is recipient:
                assert error.failure.check(wire.InvalidArgument), error
            else:
                assert not recipient.alive, f"send to live {recipient.peer_id} failed: {error}"
                assert error.failure.check(wire.PeerGone), error
            return
        assert "\x00" not in body, "a body with a NUL character was accepted"
        assert sender is not recipient and recipient.alive
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

    # --- threads: replies and waits (issue 14) ---------------------------------------------------

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
            assert foreign and error.failure.check(wire.UnknownMessage), error
            return
        assert not foreign, f"a reply to #{reply_to}, not {sender.peer_id}'s, was accepted"
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

    def teardown(self) -> None:
        """Drop connections, close the database, remove the directory."""
        self.broker.stop()
        if self.pool is not None:
            self.pool.close()
        self._drop_database()
        shutil.rmtree(self.base, ignore_errors=True)


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
