"""The dashboard over plain HTTP against an in-process broker: who gets in, what is refused,
what a page is sent, and that no open page costs nothing."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor

from claudepeers.broker.records import Credentials
from claudepeers.broker.web import auth
from claudepeers.broker.web.server import Dashboard
from claudepeers.broker.web.site import MAX_BODY_BYTES
from claudepeers.common.errors import PermissionDenied

from broker_fakes import FakeBridge
from dashboard_support import cookie_of, open_stream, request, until


@pytest.fixture
def dashboard(world: Any) -> Iterator[Dashboard]:
    """A dashboard of the world's broker: a real listener, the world's Clock for its timers."""
    board = Dashboard(world.broker, reactor, clock=world.clock)
    world.broker.dashboard = board
    yield board
    pytest_twisted.blockon(board.stop())


def url(board: Dashboard, path: str = "") -> str:
    """An address on the dashboard."""
    return f"http://127.0.0.1:{board.port}{path}"


def action_headers(board: Dashboard, cookie: str) -> dict[str, str]:
    """What the page's own fetch() sends with an action."""
    return {"Cookie": cookie, "Content-Type": "application/json", "Origin": url(board)}


@pytest_twisted.inlineCallbacks
def logged_in(board: Dashboard) -> Any:
    """Redeem a fresh link as a browser does; fires with the Cookie header's value."""
    link = yield board.link()
    answer = yield request(link)
    assert answer.code == 303 and answer.header("location") == "/"
    return cookie_of(answer)


@pytest_twisted.inlineCallbacks
def peer(world: Any, name: str) -> Any:
    """A registered peer with a fake bridge; fires with the bridge."""
    agent, bridge_pid = world.agent()
    bridge = FakeBridge()
    yield world.register(agent, bridge_pid, bridge, name=name)
    return bridge


@pytest_twisted.inlineCallbacks
def test_nothing_is_served_without_the_cookie(dashboard: Dashboard) -> None:
    """The page, its assets, the state, the stream and the actions all answer 401 without a session."""
    yield dashboard.link()
    for path in ("/", "/static/index.html", "/static/dashboard.js", "/static/dashboard.css", "/api/state", "/api/events"):
        answer = yield request(url(dashboard, path))
        assert answer.code == 401, path
        assert b"claude-peers dashboard" in answer.body and b"<script" not in answer.body
    answer = yield request(url(dashboard, "/api/send"), b"POST", action_headers(dashboard, "claude_peers_dashboard=forged"),
                           json.dumps({"to": "x", "body": "y"}).encode())
    assert answer.code == 401


@pytest_twisted.inlineCallbacks
def test_the_link_works_once_and_sets_a_strict_cookie(dashboard: Dashboard) -> None:
    """The token becomes an HttpOnly, SameSite=Strict, Path=/ cookie; the same link again gets nothing."""
    link = yield dashboard.link()
    assert link.startswith(f"http://127.0.0.1:{dashboard.port}/?token=")
    first = yield request(link)
    assert first.code == 303
    attributes = {part.strip() for part in first.header("set-cookie").split(";")}
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= attributes
    again = yield request(link)
    assert again.code == 401 and again.header("set-cookie") is None
    page = yield request(url(dashboard, "/"), headers={"Cookie": cookie_of(first)})
    assert page.code == 200 and b"/static/dashboard.js" in page.body
    assert "script-src 'self'" in page.header("content-security-policy")
    assert page.header("referrer-policy") == "no-referrer"


@pytest_twisted.inlineCallbacks
def test_an_expired_link_is_refused(dashboard: Dashboard, world: Any) -> None:
    """A link not opened within LINK_SECONDS gives no session."""
    link = yield dashboard.link()
    world.clock.advance(auth.LINK_SECONDS + 1)
    answer = yield request(link)
    assert answer.code == 401 and answer.header("set-cookie") is None


@pytest_twisted.inlineCallbacks
def test_a_foreign_host_gets_nothing_even_with_the_cookie(dashboard: Dashboard) -> None:
    """A rebound DNS name (a Host other than 127.0.0.1:port) is refused, cookie or not."""
    cookie = yield logged_in(dashboard)
    answer = yield request(url(dashboard, "/api/state"), headers={"Cookie": cookie, "Host": f"evil.example:{dashboard.port}"})
    assert answer.code == 403
    answer = yield request(url(dashboard, "/api/state"), headers={"Cookie": cookie})
    assert answer.code == 200


@pytest_twisted.inlineCallbacks
def test_actions_need_the_pages_origin_post_and_json(dashboard: Dashboard, world: Any) -> None:
    """A send with a foreign Origin, no Origin, a form body or the wrong method is refused and sends nothing."""
    bridge = yield peer(world, "api")
    cookie = yield logged_in(dashboard)
    body = json.dumps({"to": "api", "body": "hello"}).encode()
    good = action_headers(dashboard, cookie)
    cases = [
        ({**good, "Origin": "http://evil.example"}, b"POST", 403),
        ({key: value for key, value in good.items() if key != "Origin"}, b"POST", 403),
        ({**good, "Origin": f"http://localhost:{dashboard.port}"}, b"POST", 403),
        ({**good, "Content-Type": "text/plain"}, b"POST", 415),
        ({**good, "Content-Type": "application/x-www-form-urlencoded"}, b"POST", 415),
        (good, b"PUT", 405),
    ]
    for headers, method, code in cases:
        answer = yield request(url(dashboard, "/api/send"), method, headers, body)
        assert answer.code == code, (headers, method, answer.body)
    answer = yield request(url(dashboard, "/api/send"), b"GET", good)
    assert answer.code == 404
    assert bridge.pushed == []
    answer = yield request(url(dashboard, "/api/send"), b"POST", good, body)
    assert answer.code == 200 and answer.json()["status"] == "shown"
    assert [m["body"] for m in bridge.pushed] == ["hello"] and bridge.pushed[0]["from_id"] == "cli"


@pytest_twisted.inlineCallbacks
def test_broker_errors_reach_the_page_with_their_text(dashboard: Dashboard) -> None:
    """An unknown recipient is the broker's own UnknownPeer error: 404 with its text."""
    cookie = yield logged_in(dashboard)
    answer = yield request(url(dashboard, "/api/send"), b"POST", action_headers(dashboard, cookie),
                           json.dumps({"to": "nobody", "body": "x"}).encode())
    assert answer.code == 404 and "no peer has the id or name 'nobody'" in answer.json()["error"]
    answer = yield request(url(dashboard, "/api/send"), b"POST", action_headers(dashboard, cookie), b"[1, 2")
    assert answer.code == 400 and answer.json()["error"] == "the body is not JSON"


@pytest_twisted.inlineCallbacks
def test_a_kill_must_name_the_process_the_person_confirmed(dashboard: Dashboard, world: Any) -> None:
    """A kill whose pid is not the peer's agent is refused before any signal and records nothing."""
    yield peer(world, "api")
    target = world.broker.resolve("api")
    cookie = yield logged_in(dashboard)
    answer = yield request(url(dashboard, "/api/kill"), b"POST", action_headers(dashboard, cookie),
                           json.dumps({"peer": "api", "pid": target.record.agent_pid + 5, "start": 100.0}).encode())
    assert answer.code == 403 and "not the process you confirmed" in answer.json()["error"]
    kills = yield world.store.kills()
    assert kills == []


@pytest_twisted.inlineCallbacks
def test_a_body_over_the_bound_is_refused(dashboard: Dashboard) -> None:
    """A request body over MAX_BODY_BYTES is answered 413."""
    cookie = yield logged_in(dashboard)
    answer = yield request(url(dashboard, "/api/send"), b"POST", action_headers(dashboard, cookie),
                           b"x" * (MAX_BODY_BYTES + 1))
    assert answer.code == 413


@pytest_twisted.inlineCallbacks
def test_the_stream_sends_the_state_then_coalesced_updates(dashboard: Dashboard, world: Any) -> None:
    """A page gets the state at once; messages sent meanwhile arrive in one write after the flush delay."""
    yield peer(world, "api")
    cookie = yield logged_in(dashboard)
    response, reader = yield open_stream(url(dashboard, "/api/events"), {"Cookie": cookie})
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/event-stream")
    states = yield reader.wait_for("state")
    assert [p["name"] for p in states[0]["peers"]] == ["api"]
    for n in range(3):
        yield world.broker.send(None, "api", f"note {n}")
    assert reader.named("flow") == []  # nothing is written before the flush
    world.clock.advance(0.2)
    flows = yield reader.wait_for("flow")
    assert [(i["from_name"], i["to_name"], i["status"]) for i in flows[0]["items"]] == [("cli", "api", "shown")] * 3
    health = yield reader.wait_for("health")
    assert health[-1]["health"]["counters"]["sent"] == 3
    yield reader.close()


def stream_timers(world: Any) -> list[Any]:
    """The dashboard's pending timers on the broker's clock."""
    return [call for call in world.clock.getDelayedCalls() if "EventStream" in repr(call.func)]


@pytest_twisted.inlineCallbacks
def test_no_open_page_costs_no_watcher_and_no_timer(dashboard: Dashboard, world: Any) -> None:
    """Before a page connects and after it leaves, events reach no dashboard code and start no timer."""
    yield peer(world, "api")
    cookie = yield logged_in(dashboard)
    yield world.broker.send(None, "api", "unseen")
    assert not world.broker.events.watching
    assert stream_timers(world) == []
    response, reader = yield open_stream(url(dashboard, "/api/events"), {"Cookie": cookie})
    yield reader.wait_for("state")
    assert world.broker.events.watching
    yield reader.close()
    yield until(lambda: not dashboard.stream.pages)
    assert not world.broker.events.watching
    yield world.broker.send(None, "api", "unseen again")
    assert stream_timers(world) == []


class FakeProcesses:
    """A process table for operator.py: each pid's chain of (pid, ppid, name, kind)."""

    def __init__(self, chains: dict[int, list[tuple[int, int, str, str | None]]]) -> None:
        self._chains = chains

    def chain(self, pid: int) -> list[dict[str, Any]]:
        """``pid`` and its ancestors, nearest first."""
        return [{"pid": p, "ppid": parent, "start": 1.0, "name": name, "kind": kind, "environ": {}}
                for p, parent, name, kind in self._chains.get(pid, [])]


@pytest_twisted.inlineCallbacks
def test_the_open_dashboard_command_refuses_an_agent_and_says_so(dashboard: Dashboard, world: Any) -> None:
    """OpenDashboard from a process under an agent (or over TCP) is refused, and the refusal is an event."""
    from claudepeers.broker.protocol import BrokerProtocol

    dashboard.processes = FakeProcesses({
        77: [(77, 60, "claude-peers", None), (60, 50, "bash", None), (50, 40, "claude", "claude-code")],
        78: [(78, 61, "claude-peers", None), (61, 41, "bash", None), (41, 30, "tmux: server", None)],
    })
    protocol = BrokerProtocol(world.broker)
    protocol.creds = Credentials("unix", pid=77, uid=0)
    with pytest.raises(PermissionDenied, match=r"claude \(pid 50\) is an agent"):
        protocol.open_dashboard()
    assert "dashboard link refused" in world.broker.events.recent(1)[0]["detail"]
    protocol.creds = Credentials("tcp")
    with pytest.raises(PermissionDenied, match="over TCP"):
        protocol.open_dashboard()
    protocol.creds = Credentials("unix", pid=78, uid=0)
    answer = yield protocol.open_dashboard()
    assert answer["url"].startswith(f"http://127.0.0.1:{dashboard.port}/?token=")
    assert "issued to pid 78 (claude-peers < bash < tmux: server)" in world.broker.events.recent(2)[0]["detail"]


class FakeCoordination:
    """Stands for the coordination work's ``broker.coordination`` (groups and claims)."""

    def annotate(self, peer: dict[str, Any]) -> dict[str, Any]:
        """A listed peer with one group and one claim."""
        return {**peer, "groups": ["reviewers"],
                "claims": [{"pattern": "src/api/**", "reason": "refactor", "expires_at": "2027-01-01T00:00:00.000Z"}]}

    def stop(self) -> None:
        """The broker stops (nothing to cancel here)."""


class FakeThreads:
    """Stands for the threads work's ``broker.threads``: one thread of two messages."""

    def read_thread(self, caller: Any, message_id: int, before: Any, limit: Any) -> Any:
        """The operator's view of the thread of ``message_id``."""
        from twisted.internet.defer import succeed

        assert caller is None  # the page reads as the operator, like the CLI
        return succeed({"thread_id": 7, "more": 0, "messages": [
            {"id": 7, "from_id": "a", "from_name": "api", "to_id": "b", "to_name": "web", "body": "review?",
             "sent_at": "x", "acked_at": "y", "reply_to": None},
            {"id": message_id, "from_id": "b", "from_name": "web", "to_id": "a", "to_name": "api", "body": "done",
             "sent_at": "x", "acked_at": None, "reply_to": 7}]})


@pytest_twisted.inlineCallbacks
def test_claims_groups_and_threads_show_when_the_broker_keeps_them(dashboard: Dashboard, world: Any) -> None:
    """With coordination and threads on the broker, peers carry claims and groups, and a
    message's thread is one request away; an unknown message's thread is a clear 404."""
    yield peer(world, "api")
    cookie = yield logged_in(dashboard)
    answer = yield request(url(dashboard, "/api/thread?id=9"), headers={"Cookie": cookie})
    assert answer.code == 404 and answer.json()["error"] == "there is no message #9 (or it has expired)"
    world.broker.coordination = FakeCoordination()
    world.broker.threads = FakeThreads()
    state = (yield request(url(dashboard, "/api/state"), headers={"Cookie": cookie})).json()
    assert state["peers"][0]["claims"][0]["pattern"] == "src/api/**" and state["peers"][0]["groups"] == ["reviewers"]
    assert state["health"]["threads"] is True
    thread = (yield request(url(dashboard, "/api/thread?id=9"), headers={"Cookie": cookie})).json()
    assert thread["thread_id"] == 7
    assert [(i["from_name"], i["status"], i["body"]) for i in thread["items"]] == [("api", "shown", "review?"),
                                                                                  ("web", "queued", "done")]
    bad = yield request(url(dashboard, "/api/thread?id=x"), headers={"Cookie": cookie})
    assert bad.code == 400


class FakeRequest:
    """A page's streaming request: records what is written; finishes on demand."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.finished: Any = None
        self.producer: Any = None

    def write(self, data: bytes) -> None:
        """Record one write."""
        self.written.append(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:  # noqa: N802 - Twisted's name
        """Keep the producer (the page) to pause and resume it."""
        self.producer = producer

    def notifyFinish(self) -> Any:  # noqa: N802
        """A Deferred that never fires here (the page stays open)."""
        from twisted.internet.defer import Deferred

        self.finished = Deferred()
        return self.finished


@pytest_twisted.inlineCallbacks
def test_a_page_that_stops_reading_is_paused_then_sent_the_state_afresh(dashboard: Dashboard, world: Any) -> None:
    """While a page's connection is backed up nothing is written to it; when it drains it gets one fresh state."""
    yield peer(world, "api")
    page_request = FakeRequest()
    page = dashboard.stream.add(page_request)
    yield until(lambda: any(b"event: state" in chunk for chunk in page_request.written))
    page_request.producer.pauseProducing()
    before = len(page_request.written)
    for n in range(5):
        yield world.broker.send(None, "api", f"while paused {n}")
    world.clock.advance(0.2)
    assert len(page_request.written) == before  # nothing piles up for a paused page
    page_request.producer.resumeProducing()
    yield until(lambda: len(page_request.written) > before)
    assert page_request.written[before].startswith(b"event: state")
    dashboard.stream.remove(page)
