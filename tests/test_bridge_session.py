"""The bridge's wiring of inbox, stdout and broker link, with a recording fake link."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.task import deferLater

from claudepeers.wire import commands as wire
from claudepeers.bridge.connection import AsyncBroker
from claudepeers.bridge.session import Bridge
from claudepeers.bridge.broker_calls import BrokerUnreachable
from claudepeers.bridge.tools import PeerTools
from claudepeers.common.settings import Settings

from bridge_support import asyncio_test


class FakeLink:
    """Answers broker calls from a table; records acknowledgements."""

    def __init__(self, answers: dict[type, Any] | None = None) -> None:
        self.answers = answers or {}
        self.acknowledged: list[int] = []
        self.calls: list[type] = []

    def call(self, command: type, **arguments: Any) -> Deferred:
        self.calls.append(command)
        answer = self.answers.get(command)
        if answer is None:
            return fail(BrokerUnreachable("no broker in this test"))
        return succeed(answer)

    def acknowledge(self, ids: list[int]) -> Deferred:
        self.acknowledged += ids
        return succeed(None)


@pytest.fixture
def stdout_pipe() -> Any:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    os.close(read_fd)
    os.close(write_fd)


def make_bridge(write_fd: int, delivery: str, link: FakeLink, answered_first: bool = True,
                confirm: bool = False) -> Bridge:
    """A bridge on a pipe; its pushes are taken on trust unless ``confirm`` (the pipe mechanics)."""
    settings = Settings.from_env({"HOME": "/nonexistent", "CLAUDE_PEERS_NO_AUTOSTART": "1"})
    bridge = Bridge(reactor, settings, None, "claude-code", delivery, "instructions", None, answered_first,
                    b"", write_fd, confirm=confirm)
    bridge.link = link  # type: ignore[assignment]
    bridge.tools = PeerTools(AsyncBroker(link), bridge._check_messages)  # type: ignore[arg-type]
    return bridge


def notifications(read_fd: int) -> list[dict]:
    """Channel notifications written so far (the pipe is non-blocking after the writer)."""
    os.set_blocking(read_fd, False)
    try:
        data = os.read(read_fd, 1 << 20)
    except BlockingIOError:
        return []
    return [json.loads(line) for line in data.splitlines()]


def message(message_id: int, body: str = "hi") -> dict:
    return {"id": message_id, "from_id": "ab12cd34", "from_name": "api", "verified": True, "body": body,
            "sent_at": "2026-11-24T21:00:00.000Z", "from_client": "codex", "from_cwd": "/w", "from_summary": ""}


def test_push_waits_for_initialized_then_shows_everything_in_order(stdout_pipe: Any) -> None:
    """Pushes before the agent's 'initialized' are held, then notified in order and acknowledged."""
    read_fd, write_fd = stdout_pipe
    link = FakeLink()
    bridge = make_bridge(write_fd, "push", link)
    assert bridge._deliver(message(2)) is False
    assert bridge._deliver(message(1)) is False
    assert notifications(read_fd) == []
    bridge._initialized()
    shown = notifications(read_fd)
    assert [n["params"]["meta"]["message_id"] for n in shown] == ["1", "2"]
    assert all(n["method"] == "notifications/claude/channel" for n in shown)
    assert link.acknowledged == [1, 2]
    assert bridge._deliver(message(3)) is True
    assert bridge._deliver(message(3)) is True  # pushed again after a reconnect: not shown again
    assert [n["params"]["meta"]["message_id"] for n in notifications(read_fd)] == ["3"]


def test_push_shows_fetched_mail_with_the_next_push(stdout_pipe: Any) -> None:
    """Held mail in push mode goes out, in order, with the next pushed message."""
    read_fd, write_fd = stdout_pipe
    link = FakeLink()
    bridge = make_bridge(write_fd, "push", link, answered_first=False)
    bridge.inbox.hold(message(5))
    assert bridge._deliver(message(6)) is True
    assert [n["params"]["meta"]["message_id"] for n in notifications(read_fd)] == ["5", "6"]
    assert link.acknowledged == [5]


@asyncio_test
async def test_inline_footer_and_check_messages_show_each_message_once(stdout_pipe: Any) -> None:
    """Held mail ends the next tool result (bounded); check_messages adds what the broker holds."""
    read_fd, write_fd = stdout_pipe
    link = FakeLink({
        wire.Whoami: {"peer": {"id": "me", "name": "me"}},
        wire.FetchUnread: {"messages": [message(1), message(3, "from the store")], "more": 0},
    })
    bridge = make_bridge(write_fd, "inline", link)
    for index in range(1, 8):
        assert bridge._deliver(message(index, f"body {index}")) is False
    result = await bridge._call_tool("whoami", {})
    assert "--- new messages from other agents ---" in result.text
    assert result.text.count("[claude-peers message #") == 5
    assert "[2 more claude-peers messages waiting: call check_messages to read them]" in result.text
    assert link.acknowledged == [1, 2, 3, 4, 5]
    checked = await bridge._call_tool("check_messages", {})
    assert checked.text.startswith("2 new messages:")
    assert "\u2502 body 6" in checked.text and "\u2502 body 7" in checked.text
    assert "from the store" not in checked.text  # id 3 was shown already
    assert link.acknowledged == [1, 2, 3, 4, 5, 6, 7]
    assert (await bridge._call_tool("check_messages", {})).text == "No new messages."
    assert notifications(read_fd) == []


@asyncio_test
async def test_check_messages_without_a_broker_shows_what_the_bridge_holds(stdout_pipe: Any) -> None:
    """A broker outage does not hide mail the bridge already holds."""
    _read_fd, write_fd = stdout_pipe
    bridge = make_bridge(write_fd, "inline", FakeLink())
    bridge._deliver(message(9, "held"))
    checked = await bridge._call_tool("check_messages", {})
    assert "\u2502 held" in checked.text
    assert "not reachable" in checked.text


@asyncio_test
async def test_check_messages_shows_even_a_message_larger_than_its_bound(stdout_pipe: Any) -> None:
    """With a raised body limit, one huge message still comes out whole, never stuck."""
    _read_fd, write_fd = stdout_pipe
    bridge = make_bridge(write_fd, "inline", FakeLink({wire.FetchUnread: {"messages": [], "more": 0}}))
    bridge._deliver(message(1, "x" * 100_000))
    footer = await bridge._call_tool("check_messages", {})
    assert footer.text.startswith("1 new message:") and "x" * 100_000 in footer.text


@pytest_twisted.inlineCallbacks
def test_a_push_counts_as_shown_only_once_it_is_in_the_pipe(stdout_pipe: Any) -> Any:
    """With the agent's pipe full, the Deliver answer waits until the notification is in it."""
    read_fd, write_fd = stdout_pipe
    os.set_blocking(read_fd, False)
    bridge = make_bridge(write_fd, "push", FakeLink(), answered_first=False)
    answers = [bridge._deliver(message(index, "y" * 20_000)) for index in range(1, 8)]
    waiting = [answer for answer in answers if isinstance(answer, Deferred)]
    assert waiting, "the pipe should have filled up"
    assert not any(d.called for d in waiting)
    received = b""
    while len(received.splitlines()) < 7:
        yield deferLater(reactor, 0.01, lambda: None)  # let the writer drain as we read
        try:
            received += os.read(read_fd, 1 << 20)
        except BlockingIOError:
            pass
    results = yield gatherResults(waiting)
    assert results == [True] * len(waiting)
