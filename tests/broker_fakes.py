"""Test doubles for the broker's collaborators: a process table and a bridge connection.

They record what happened rather than asserting on calls (STYLE habit 10).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import Clock

from claudepeers.common.agents import same_start
from claudepeers.broker.core import Broker, Claim, Credentials
from claudepeers.common.settings import Limits
from claudepeers.broker.storage import Store, open_pool, prepare


class FakeProcesses:
    """A process table: which (pid, start) run, and who descends from whom."""

    def __init__(self) -> None:
        self.running: dict[int, float] = {}
        self.parents: dict[int, int] = {}

    def spawn(self, pid: int, start: float, parent: int | None = None) -> None:
        """A process starts."""
        self.running[pid] = start
        if parent is not None:
            self.parents[pid] = parent

    def end(self, pid: int) -> None:
        """A process ends."""
        self.running.pop(pid, None)

    def is_alive(self, pid: int, start: float) -> bool:
        """Running with that start time."""
        return pid in self.running and same_start(self.running[pid], start)

    def is_running(self, pid: int) -> bool:
        """Running, whatever its start time."""
        return pid in self.running

    def is_ancestor(self, ancestor: int, pid: int) -> bool:
        """``ancestor`` is ``pid`` or above it."""
        current: int | None = pid
        while current is not None:
            if current == ancestor:
                return True
            current = self.parents.get(current)
        return False


class FakeBridge:
    """A bridge connection: records pushes; answers them at once or on demand."""

    def __init__(self, delivery: str = "push", auto: bool | None = True) -> None:
        self.delivery = delivery
        self.auto = auto  # True: shown at once; False: held; None: answer by hand
        self.pushed: list[dict[str, Any]] = []  # every message pushed, in order
        self.pushes: list[list[int]] = []  # the ids of each push (one Deliver each)
        self.pending: list[tuple[list[dict[str, Any]], Deferred]] = []
        self.closed_because: str | None = None
        self.elsewhere: list[int] = []

    def deliver(self, messages: list[dict[str, Any]]) -> Deferred:
        """Record the push and answer per ``auto`` (one flag per message)."""
        self.pushed += messages
        self.pushes.append([message["id"] for message in messages])
        if self.auto is None:
            d: Deferred = Deferred()
            self.pending.append((messages, d))
            return d
        return succeed([self.auto] * len(messages))

    def answer_pending(self, shown: bool = True) -> int:
        """Answer every push waiting for an answer; returns how many there were."""
        pending, self.pending = self.pending, []
        for messages, d in pending:
            d.callback([shown] * len(messages))
        return len(pending)

    def close(self, reason: str) -> None:
        """Record that the broker dropped us."""
        self.closed_because = reason

    def shown_elsewhere(self, message_ids: list[int]) -> None:
        """Record ids a hook showed."""
        self.elsewhere += message_ids

    def ids(self) -> list[int]:
        """Ids pushed so far, in order."""
        return [m["id"] for m in self.pushed]


class World:
    """A broker over a real store (a SQLite file in ``base``, or the PostgreSQL ``database``
    DSN), with a Clock and a fake process table (``processes``: one an earlier World used)."""

    def __init__(self, base: Path, limits: Limits | None = None, reactor: Any = None,
                 database: str | None = None, processes: FakeProcesses | None = None) -> None:
        self.db_path: Path | str = database if database is not None else base / "peers.db"
        prepare(self.db_path)
        self.store = Store(open_pool(str(self.db_path)))
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.processes = processes or FakeProcesses()
        self.limits = limits or Limits()
        self.broker = Broker(self.store, self.clock, self.limits, host="testhost", processes=self.processes,
                             reactor=reactor)
        self._next_pid = 1000
        #: the iosim connections of a test (broker_pair.Pair): settling one pumps them all
        self.pairs: list[Any] = []

    def agent(self, start: float = 100.0) -> tuple[int, int]:
        """An agent process and a bridge process under it: (agent_pid, bridge_pid)."""
        agent_pid = self.process(start)
        bridge_pid = agent_pid + 1
        self.processes.spawn(bridge_pid, start + 1, parent=agent_pid)
        return agent_pid, bridge_pid

    def process(self, start: float, parent: int | None = None) -> int:
        """One more process in the table (under ``parent``, if given): its pid (ten apart from the last)."""
        pid = self._next_pid
        self._next_pid += 10
        self.processes.spawn(pid, start, parent=parent)
        return pid

    def register(self, agent_pid: int, bridge_pid: int, connection: Any, start: float = 100.0, **claim: Any) -> Deferred:
        """Register ``connection`` as the bridge of ``agent_pid``."""
        fields = dict(agent_pid=agent_pid, agent_start=start, client_type="claude-code", cwd="/work/api")
        fields.update(claim)
        return self.broker.register(connection, Credentials("unix", pid=bridge_pid, uid=0), Claim(**fields))

    def close(self) -> Deferred:
        """Stop the broker and close the store."""
        self.broker.stop()
        return self.store.close()


@inlineCallbacks
def failure_of(d: Deferred) -> Any:
    """The exception a Deferred fails with (the test fails if it succeeds)."""
    try:
        result = yield d
    except Exception as error:  # the point: hand the error to the test
        return error
    pytest.fail(f"expected a failure, got {result!r}")


@inlineCallbacks
def sender_and_offline_bob(world: World) -> Any:
    """A registered sender, and "bob" registered then disconnected: (sender, bob, bob's pids)."""
    a1, b1 = world.agent()
    a2, b2 = world.agent()
    sender, _ = yield world.register(a1, b1, FakeBridge())
    offline = FakeBridge(auto=None)
    recipient, _ = yield world.register(a2, b2, offline, name="bob")
    world.broker.disconnected(recipient, offline)
    return sender, recipient, (a2, b2)
