"""The wire and plumbing of the broker model (``tests/test_model.py``), which says what is real and what stood in.

:class:`SyncPool` and :class:`QueuedPool` stand in for adbapi's thread pool (one real sqlite3
connection; the queue runs when the model says), :class:`ModelBridge` is an agent's bridge
(a real ``amp.AMP`` joined to the broker by ``twisted.test.iosim``), and :class:`ModelPlumbing`
starts the broker, connects agents, calls commands and moves bytes and database work.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test import iosim

from claudepeers.wire import commands as wire
from claudepeers.broker.core import Broker, Credentials
from claudepeers.broker.protocol import BrokerProtocol
from claudepeers.common.settings import Limits
from claudepeers.broker.storage import Store, database, prepare

from broker_fakes import FakeProcesses
from engines import is_pg

UID = 4242


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

    def __init__(self, agent: "Agent", machine: "ModelPlumbing") -> None:
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


class ModelPlumbing:
    """The model's plumbing (a mixin of ``BrokerModel``): the broker over a queued pool, the
    agents' connections over iosim, calls, and what the clients saw."""

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

    def teardown(self) -> None:
        """Drop connections, close the database, remove the directory."""
        self.broker.stop()
        if self.pool is not None:
            self.pool.close()
        self._drop_database()
        shutil.rmtree(self.base, ignore_errors=True)
