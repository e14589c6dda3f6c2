"""Fuzzing every input surface of real processes (issue 6): AMP here, MCP and stdin in ``test_fuzz_mcp.py``.

AMP boxes, random and malformed, with oversized values, on the broker's UNIX socket and
TCP listener (with and without the token), against a real broker subprocess. After each
batch a healthy peer must still be served (list and send work), the broker process must
still run and nothing stored may be lost. ``StopBroker`` and ``KillPeer`` are left out of
the AMP fuzz: they are meant to stop the broker or end processes.

Case counts: ``CP_FUZZ_EXAMPLES`` (default 120 per surface; the slow suite uses 10x).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from twisted.protocols import amp

from claudepeers.wire import commands as wire
from claudepeers.broker.admission import UNBOUND_BOX_KEYS
from claudepeers.broker.protocol import OPEN_COMMANDS, BrokerProtocol
from claudepeers.common.settings import Limits

from conftest import BrokerProcess, broker_env
from raw_amp import Closed, RawAMP, RemoteError, frame
from fault_support import free_port
from fuzz_support import COUNTS, FUZZ_SETTINGS, LONG_SETTINGS, counted

COMMANDS = [c for c in vars(wire).values()
            if isinstance(c, type) and issubclass(c, amp.Command) and c is not amp.Command
            and c not in (wire.StopBroker, wire.KillPeer)]
#: Commands the broker serves (the others are remote callbacks it calls on bridges).
BROKER_COMMANDS = {c.commandName for c in COMMANDS
                   if amp.AMP.locateResponder(BrokerProtocol(broker=None, uid=0), c.commandName) is not None}  # type: ignore[arg-type]
ARGUMENT_NAMES = sorted({name for c in COMMANDS for name, _ in c.arguments} | {b"body.1", b"body.2", b"message.1"})


@dataclass
class Target:
    """A real broker with two healthy TCP peers registered for stand-in agents."""

    broker: BrokerProcess
    port: int
    token: str
    sleepers: list[subprocess.Popen] = field(default_factory=list)
    alice: RawAMP | None = None
    bob: RawAMP | None = None
    sent: list[int] = field(default_factory=list)

    def check_healthy(self) -> None:
        """The broker runs; alice lists bob and sends to him; bob reads it; nothing was lost."""
        assert self.broker.process is not None and self.broker.process.poll() is None, self.broker.log_text()[-2000:]
        assert self.alice is not None and self.bob is not None
        listed = {p["name"] for p in self.alice.call(wire.ListPeers, scope="machine")["peers"]}
        assert "bob" in listed
        answer = self.alice.call(wire.Send, to="bob", body=f"still here {len(self.sent)}")
        self.sent.append(answer["message_id"])
        inbox = [m["id"] for m in self.bob.call(wire.FetchUnread, limit=1000)["messages"]]
        assert inbox == self.sent, "every message sent during the fuzzing is still there, in order"
        assert RawAMP.unix(str(self.broker.socket_path)).call(wire.Hello)["pid"] == self.broker.process.pid


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    """A broker subprocess with TCP and two healthy peers, shared by the AMP fuzz tests."""
    base = Path(tempfile.mkdtemp(prefix="cp-fz-", dir="/tmp"))
    port = free_port()
    broker = BrokerProcess(base, broker_env(base), args=["--tcp", str(port)]).start()
    result = Target(broker, port, broker.settings.token_path.read_text().strip())
    try:
        for name in ("alice", "bob"):
            # Over TCP a client may claim only a session of its own tree: this process, one thread each.
            client = RawAMP.tcp(port, result.token)
            client.call(wire.Register, agent_pid=os.getpid(), agent_start=psutil.Process().create_time(),
                        thread_id=name, client_type="codex", cwd=f"/fuzz/{name}", name=name, delivery="none")
            setattr(result, name, client)
        result.check_healthy()
        yield result
        result.check_healthy()
        if os.environ.get("CP_FUZZ_KEEP_LOG"):
            Path(os.environ["CP_FUZZ_KEEP_LOG"]).write_text(broker.log_text())
    finally:
        broker.stop(signal.SIGKILL)
        for sleeper in result.sleepers:
            sleeper.kill()
            sleeper.wait()
        shutil.rmtree(base, ignore_errors=True)


def connect(target: Target, how: str) -> RawAMP:
    """A fresh connection: unix, tcp (no token) or tcp+token."""
    if how == "unix":
        return RawAMP.unix(str(target.broker.socket_path), timeout=10)
    return RawAMP.tcp(target.port, target.token if how == "tcp+token" else None, timeout=10)


# --- AMP ----------------------------------------------------------------------------------------

ODD_VALUES = [b"", b"True", b"False", b"-1", b"0", b"99999999999999999999999999", b"nan", b"inf", b"1e309",
              b"\xff\xfe\xfd", b"\x00", b'{"a":', b"[]", b"null", b"machine", b"none", b"push", b"/",
              b"\x00\x01\x00", b"x" * 65_535]
values = st.one_of(st.binary(max_size=200), st.sampled_from(ODD_VALUES),
                   st.integers(-2**70, 2**70).map(lambda i: str(i).encode()),
                   st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")))
keys = st.one_of(st.sampled_from(ARGUMENT_NAMES), st.binary(min_size=1, max_size=30).filter(lambda k: not k.startswith(b"_")))
command_names = st.one_of(st.sampled_from([c.commandName for c in COMMANDS]), st.binary(max_size=30))


@st.composite
def well_framed_boxes(draw: Any) -> tuple[str, dict[bytes, bytes]]:
    """A box that is valid AMP framing, for a real or invented command, with random arguments."""
    how = draw(st.sampled_from(["unix", "tcp", "tcp+token"]))
    box = draw(st.dictionaries(keys, values, max_size=10))
    name = draw(command_names)
    if draw(st.booleans()):
        # Start from the command's real arguments, then spoil some.
        command = draw(st.sampled_from(COMMANDS))
        name = command.commandName
        for argument, _kind in command.arguments:
            if draw(st.integers(0, 4)):
                box.setdefault(argument, draw(values))
    box[b"_command"] = name
    return how, box


@FUZZ_SETTINGS
@given(case=well_framed_boxes())
# Found by the fuzz: a command's own declared error (here UNKNOWN_MESSAGE) is a clear error too.
@example(case=("unix", {b"_command": b"ReadThread", b"thread_id": b"2"}))
def test_random_amp_boxes_get_an_answer_or_a_clear_error(target: Target, case: tuple[str, dict[bytes, bytes]]) -> None:
    """Any well-framed box with a tag is answered (an answer or a typed error) and the connection stays
    usable; on TCP without the token every command but Authenticate, Hello and Ping is refused."""
    how, box = case
    counted(f"amp-{how}")
    client = connect(target, how)
    try:
        box[b"_ask"] = b"fz1"
        client.send_bytes(frame(box))
        if how == "tcp" and (sum(4 + len(k) + len(v) for k, v in box.items()) > Limits().unbound_box_bytes
                             or len(box) > UNBOUND_BOX_KEYS):
            # Before the token a box over the small bound is not read: the broker hangs up.
            with pytest.raises((Closed, ConnectionResetError)):
                client.answer(b"fz1")
            return
        gated = how == "tcp" and box[b"_command"] in BROKER_COMMANDS - OPEN_COMMANDS
        try:
            answer = client.answer(b"fz1")
            assert "_answer" in answer
            assert not gated, "TCP without the token is served nothing but Authenticate, Hello and Ping"
        except RemoteError as error:
            if gated:
                assert error.code == "AUTHENTICATION_REQUIRED", error
            known = {code.decode() for code in {**wire.COMMON_ERRORS, **wire.PEER_ERRORS}.values()}
            known |= {code.decode() for command in COMMANDS if command.commandName == box[b"_command"]
                      for code in dict(command.errors).values()}  # what the command itself declares
            known |= {"UNHANDLED", "UNKNOWN", "ALREADY_REGISTERED", "IDENTITY_REJECTED", "NAME_TAKEN",
                      "LIMIT_EXCEEDED", "KILL_REFUSED"}
            assert error.code in known, error
            assert error.code != "INTERNAL_ERROR", f"{box[b'_command']!r}: {error}"
            assert error.description, "every error says what went wrong"
        assert client.call(wire.Ping) == {}, "the connection stays usable after a bad box"
    finally:
        client.close()


def test_non_ascii_command_name_is_answered_unhandled_not_dropped(target: Target) -> None:
    """Regression: a command name with non-ASCII bytes made AMP raise UnicodeDecodeError and drop
    the connection; now it is an unknown command like any other (UNHANDLED) and the connection stays."""
    client = connect(target, "unix")
    try:
        client.send_bytes(frame({b"_command": b"\xffSend", b"_ask": b"1"}))
        with pytest.raises(RemoteError) as raised:
            client.answer(b"1")
        assert raised.value.code == "UNHANDLED"
        assert client.call(wire.Ping) == {}
    finally:
        client.close()


def test_an_error_quoting_a_huge_value_is_cut_not_a_dropped_connection(target: Target) -> None:
    """Regression: an error whose description quotes a 65,000-byte argument (an unknown target,
    an unknown command name of escaped bytes) was longer than AMP allows; AMP raised TooLong
    and dropped the connection. The description is now cut and the connection lives."""
    client = connect(target, "tcp+token")
    try:
        with pytest.raises(RemoteError) as raised:
            client.call(wire.Send, to="x" * 65_000, body="hello")
        assert raised.value.code == "UNKNOWN_PEER" and "bytes in all" in raised.value.description
        client.send_bytes(frame({b"_command": b"\xff" * 30_000, b"_ask": b"long"}))
        with pytest.raises(RemoteError) as raised:
            client.answer(b"long")
        assert raised.value.code == "UNHANDLED"
        assert client.call(wire.Ping) == {}
    finally:
        client.close()


@pytest.mark.parametrize("how", ["unix", "tcp+token"])
@pytest.mark.parametrize("command", [wire.Register, wire.Attach])
def test_a_negative_agent_pid_is_an_invalid_argument(target: Target, how: str, command: type[amp.Command]) -> None:
    """Regression: a negative agent_pid reached psutil, whose ValueError came back as an
    INTERNAL_ERROR ("see the broker log"); it is now a clear INVALID_ARGUMENT naming it."""
    client = connect(target, how)
    try:
        arguments: dict[str, Any] = {"agent_pid": -6310, "agent_start": 1.0}
        if command is wire.Register:
            arguments.update(client_type="codex", cwd="/fuzz", delivery="none")
        with pytest.raises(RemoteError) as raised:
            client.call(command, **arguments)
        assert raised.value.code == "INVALID_ARGUMENT" and "agent_pid" in raised.value.description
    finally:
        client.close()


@st.composite
def malformed_streams(draw: Any) -> tuple[str, bytes]:
    """Bytes that break AMP's framing: noise, truncated boxes, over-long keys, stray answers."""
    how = draw(st.sampled_from(["unix", "tcp", "tcp+token"]))
    kind = draw(st.sampled_from(["noise", "truncated", "long-key", "stray-answer", "no-end"]))
    if kind == "noise":
        data = draw(st.binary(min_size=1, max_size=3000))
    elif kind == "truncated":
        whole = frame({b"_command": b"Send", b"_ask": b"1", b"to": b"bob", b"body": draw(st.binary(max_size=500))})
        data = whole[: draw(st.integers(1, len(whole) - 1))]
    elif kind == "long-key":
        data = frame({b"k" * draw(st.integers(256, 2000)): b"v", b"_command": b"Ping", b"_ask": b"1"})
    elif kind == "stray-answer":
        data = frame({draw(st.sampled_from([b"_answer", b"_error"])): draw(st.binary(min_size=1, max_size=5)),
                      b"_error_code": b"X", b"_error_description": b"y"})
    else:
        data = frame({b"_command": b"Ping", b"_ask": b"1"})[:-2] + draw(st.binary(max_size=200).filter(lambda b: b"\x00\x00" not in b))
    return how, data


@FUZZ_SETTINGS
@given(case=malformed_streams())
def test_malformed_amp_streams_cost_only_their_own_connection(target: Target, case: tuple[str, bytes]) -> None:
    """Broken framing may close that one connection; the broker and other peers carry on."""
    how, data = case
    counted(f"amp-malformed-{how}")
    client = connect(target, how)
    try:
        try:
            client.send_bytes(data)
            client.sock.shutdown(socket.SHUT_WR)
            client.drain(0.05)
        except (OSError, Closed, Exception):  # whatever the broker does to this connection is allowed
            pass
    finally:
        client.close()
    assert target.broker.process is not None and target.broker.process.poll() is None


def test_oversized_values_get_clear_errors_and_the_broker_carries_on(target: Target) -> None:
    """A 9 MB chunked body, a 64 KiB name, a 10,000-key box and a 60 KB id list: each gets a clear
    error (or a bounded answer) on its own connection; the healthy peers are still served."""
    client = connect(target, "tcp+token")
    try:
        chunks = {b"body" if i == 0 else b"body.%d" % i: b"x" * 60_000 for i in range(150)}
        client.send_bytes(frame({b"_command": b"Send", b"_ask": b"big", b"to": b"bob", **chunks}))
        with pytest.raises(RemoteError) as raised:
            client.answer(b"big")
        assert raised.value.code == "INVALID_ARGUMENT" and "longer than" in raised.value.description
        with pytest.raises(RemoteError) as raised:
            client.call(wire.Send, to="bob", body="y" * 40_000)
        assert raised.value.code == "LIMIT_EXCEEDED" and "max_body_bytes" in raised.value.description
        with pytest.raises(RemoteError) as raised:
            client.call(wire.SetName, name="n" * 65_000)
        assert raised.value.code in {"NOT_REGISTERED", "LIMIT_EXCEEDED"}
        many = {b"k%d" % i: b"v" for i in range(10_000)}
        client.send_bytes(frame({b"_command": b"Ping", b"_ask": b"many", **many}))
        assert "_answer" in client.answer(b"many")
        ids = b"\x00\x0512345" * 9_285  # ListOf(Integer): 9,285 ids in one 64,995-byte value
        client.send_bytes(frame({b"_command": b"MessageState", b"_ask": b"ids", b"message_ids": ids}))
        try:
            client.answer(b"ids")
        except RemoteError as error:
            assert error.code in {"INVALID_ARGUMENT", "NOT_REGISTERED", "LIMIT_EXCEEDED"}
        assert client.call(wire.Ping) == {}
    finally:
        client.close()
    counted("amp-oversized")
    target.check_healthy()


def test_amp_batches_leave_the_healthy_peers_served(target: Target) -> None:
    """After the random and malformed batches above, list/send still work and nothing was lost;
    the broker logged no exception (an answer to a question it never asked drops that
    connection with one warning, which is all a stray answer deserves)."""
    target.check_healthy()
    unexpected = target.broker.log_text().split("Unhandled Error")[1:]
    assert not unexpected, unexpected[0][:3000]
    print("FUZZ-COUNTS " + json.dumps(COUNTS, sort_keys=True))


# --- the long passes (slow suite): ten times the cases -----------------------------------------


@pytest.mark.slow
@LONG_SETTINGS
@given(case=well_framed_boxes())
def test_long_random_amp_boxes(target: Target, case: tuple[str, dict[bytes, bytes]]) -> None:
    """Ten times the random well-framed boxes (slow suite)."""
    test_random_amp_boxes_get_an_answer_or_a_clear_error.hypothesis.inner_test(target, case)  # type: ignore[attr-defined]


@pytest.mark.slow
@LONG_SETTINGS
@given(case=malformed_streams())
def test_long_malformed_amp_streams(target: Target, case: tuple[str, bytes]) -> None:
    """Ten times the malformed streams (slow suite)."""
    test_malformed_amp_streams_cost_only_their_own_connection.hypothesis.inner_test(target, case)  # type: ignore[attr-defined]


@pytest.mark.slow
def test_long_amp_batches_leave_the_healthy_peers_served(target: Target) -> None:
    """After the long AMP batches, the healthy peers are still served (slow suite)."""
    test_amp_batches_leave_the_healthy_peers_served(target)
