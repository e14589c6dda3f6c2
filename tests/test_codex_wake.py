"""Waking an idle Codex thread: one ``codex queue`` per burst, never twice for a message.

The Waker on a Clock with a stand-in for ``codex queue`` that records each notice and
answers when the test says; and the Codex process facts the bridge reads.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from claudepeers.common.agents import AgentProcess
from claudepeers.bridge import codexproc
from claudepeers.bridge.connection import _shown_answer
from claudepeers.bridge.wake import NOTICE_CHARS, WOKE, Waker, notice


class FakeQueue:
    """Records each notice queued; each answers when ``finish`` is called."""

    def __init__(self) -> None:
        self.notices: list[str] = []
        self.pending: list[Deferred] = []

    def __call__(self, text: str) -> Deferred:
        """Record one queue call; it answers on ``finish``."""
        self.notices.append(text)
        d: Deferred = Deferred()
        self.pending.append(d)
        return d

    def finish(self, ok: bool = True) -> None:
        """The oldest queue call ends (rc 0 when ``ok``)."""
        self.pending.pop(0).callback(ok)


def message(message_id: int, sender: str = "alice") -> dict[str, Any]:
    """A pushed message as the broker sends it (the fields the notice reads)."""
    return {"id": message_id, "from_id": f"id-{sender}", "from_name": sender, "body": f"body {message_id}"}


def flags(results: list[Any]) -> list[Any]:
    """What each wake() answered, a Deferred's result once fired (None: not yet)."""
    out = []
    for result in results:
        if isinstance(result, Deferred):
            got: list[Any] = []
            result.addCallback(lambda value: (got.append(value), value)[1])
            out.append(got[0] if got else None)
        else:
            out.append(result)
    return out


def make(present: bool = True) -> tuple[Waker, FakeQueue, Clock]:
    """A Waker on a Clock with a recording queue."""
    clock, queue = Clock(), FakeQueue()
    return Waker(clock, queue, lambda: present), queue, clock


def test_a_burst_is_one_queue_and_every_message_is_answered_woke() -> None:
    """Three messages in one reactor turn: one notice naming all three; all answered woke."""
    waker, queue, clock = make()
    results = [waker.wake(message(n, sender)) for n, sender in ((1, "alice"), (2, "bob"), (3, "alice"))]
    clock.advance(0)
    assert queue.notices == ["[claude-peers] 3 new peer messages from alice (id-alice), bob (id-bob): "
                             "call the claude-peers check_messages tool to read them."]
    assert flags(results) == [None, None, None]
    queue.finish()
    assert flags(results) == [WOKE, WOKE, WOKE]
    assert waker.queued == [[1, 2, 3]]


def test_messages_while_a_notice_is_pending_ride_along_and_are_never_queued_twice() -> None:
    """While the notice's turn has not shown its messages, newcomers ride along; a re-push asks nothing."""
    waker, queue, clock = make()
    first = waker.wake(message(1))
    clock.advance(0)
    during = waker.wake(message(2))  # arrives while codex queue runs
    queue.finish()
    after = waker.wake(message(3))  # arrives before the woken turn showed anything
    clock.advance(0)
    assert flags([first, during, after]) == [WOKE, WOKE, WOKE]
    assert waker.wake(message(1)) == WOKE  # pushed again after a reconnect
    clock.advance(0)
    assert len(queue.notices) == 1
    waker.shown([1, 2, 3])
    clock.advance(0)
    assert len(queue.notices) == 1


def test_a_rider_the_woken_turn_left_unshown_gets_one_queue_of_its_own() -> None:
    """The prompt hook showed the notice's message but not a later one: that one is queued once."""
    waker, queue, clock = make()
    waker.wake(message(1))
    clock.advance(0)
    queue.finish()
    assert waker.wake(message(2)) == WOKE
    waker.shown([1])
    clock.advance(0)
    assert len(queue.notices) == 2 and "1 new peer message from" in queue.notices[1]
    queue.finish()
    assert waker.queued == [[1], [2]]


def test_no_queue_when_the_person_has_left_and_a_failed_queue_answers_held() -> None:
    """No TUI of the thread runs any more: nothing is queued, the message stays held (False)."""
    waker, queue, clock = make(present=False)
    left = waker.wake(message(1))
    clock.advance(0)
    assert queue.notices == [] and flags([left]) == [False]
    waker, queue, clock = make()
    failed = waker.wake(message(1))
    clock.advance(0)
    queue.finish(ok=False)
    assert flags([failed]) == [False] and waker.queued == []


def test_the_notice_is_bounded_and_names_at_most_three_senders() -> None:
    """Many senders with long names: three named, the rest counted, within NOTICE_CHARS."""
    text = notice([message(n, f"sender{n}-" + "x" * 60) for n in range(6)])
    assert len(text) <= NOTICE_CHARS and "and 3 more" in text and text.startswith("[claude-peers] 6 new")


def test_the_deliver_answer_carries_woke_only_when_some_message_woke() -> None:
    """Deliver's optional woke list appears only when needed (older brokers never see it)."""
    assert _shown_answer([True, False]) == {"shown": [True, False]}
    assert _shown_answer([True, WOKE, False]) == {"shown": [True, False, False], "woke": [False, True, False]}


def test_codex_home_comes_from_the_environment_then_the_daemon_path() -> None:
    """CODEX_HOME as set; else where the app-server daemon's copy of codex lives; else ~/.codex."""
    daemon = "/home/u/work/.codex/packages/app-server-daemon/releases/0.171.0/bin/codex"
    assert codexproc.codex_home({"CODEX_HOME": "/x/home"}, daemon) == "/x/home"
    assert codexproc.codex_home({"HOME": "/home/u"}, daemon) == "/home/u/work/.codex"
    assert codexproc.codex_home({"HOME": "/home/u"}, "/usr/bin/codex") == "/home/u/.codex"


def test_a_no_daemon_tui_is_its_own_person_and_the_binary_comes_from_argv(tmp_path: Any) -> None:
    """A --no-daemon TUI runs its threads itself: the person is there while it runs."""
    binary = tmp_path / "codex"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    agent = AgentProcess(4242, 1.5, "codex", (str(binary), "--no-daemon"))
    assert codexproc.tuis_of(agent, "/h") == ((4242, 1.5),)
    assert codexproc.codex_binary(agent) == str(binary)
