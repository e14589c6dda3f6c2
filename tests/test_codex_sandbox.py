"""A sandbox that refuses the broker's socket (Codex's seatbelt): the record, doctor, install --tcp.

The refusal itself needs macOS (or Codex's Linux sandbox); here it is the error a denied
connect() gives, EPERM, handed to the code that meets it.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
import tomllib
from pathlib import Path
from typing import Iterator

import pytest
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.python import usage
from twisted.python.failure import Failure

from claudepeers.cli import agent_config
from claudepeers.cli.doctor import check_codex_reach
from claudepeers.cli.install import InstallOptions
from claudepeers.common.client import AutostartEndpoint, BrokerNotRunning
from claudepeers.common import sandbox
from claudepeers.common.settings import Settings
from cli_support import cli
from conftest import broker_env


@pytest.fixture
def records(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Records go to a folder of this test's own."""
    folder = short_dir / "records"
    monkeypatch.setattr(sandbox, "record_dirs", lambda uid=None: [folder])
    return folder


def settings_in(base: Path) -> Settings:
    """Settings whose socket lives under ``base``."""
    return Settings.from_env({"HOME": str(base), "CLAUDE_PEERS_SOCKET": str(base / "run" / "cp.sock")})


def test_a_denied_connect_leaves_a_record_naming_the_sandbox(short_dir: Path, records: Path) -> None:
    """EPERM from connect(): a record with the socket, the error and Codex's sandbox marker."""
    settings = settings_in(short_dir)
    error = ConnectError(errno.EPERM, "Operation not permitted")
    path = sandbox.note_failed_connect(settings, error, environ={"CODEX_SANDBOX": "seatbelt"})
    assert path is not None and path.parent == records and (records.stat().st_mode & 0o777) == 0o700
    [record] = sandbox.failed_connects(settings.socket_path)
    assert record["pid"] == os.getpid() and record["errno"] == errno.EPERM
    assert record["socket"] == str(settings.socket_path) and record["sandbox"] == "CODEX_SANDBOX=seatbelt"
    assert sandbox.failed_connects(short_dir / "another.sock") == []


def test_an_absent_broker_is_no_sandbox(short_dir: Path, records: Path) -> None:
    """ENOENT with no socket, a refused connection and TCP settings leave no record;
    ENOENT while the socket exists (seatbelt's way of saying no) does."""
    settings = settings_in(short_dir)
    assert sandbox.note_failed_connect(settings, ConnectError(errno.ENOENT, "No such file")) is None
    assert sandbox.note_failed_connect(settings, ConnectError(errno.ECONNREFUSED, "refused")) is None
    tcp = settings.with_changes(url="tcp://127.0.0.1:7899")
    assert sandbox.note_failed_connect(tcp, ConnectError(errno.EPERM, "no")) is None
    settings.socket_path.parent.mkdir()
    settings.socket_path.touch()
    assert sandbox.note_failed_connect(settings, ConnectError(errno.ENOENT, "No such file")) is not None


def test_a_shared_folder_of_someone_else_is_not_used(short_dir: Path, records: Path) -> None:
    """A records folder open to others (or a symlink) is neither written nor read."""
    records.mkdir(mode=0o755)
    os.chmod(records, 0o755)
    settings = settings_in(short_dir)
    assert sandbox.note_failed_connect(settings, ConnectError(errno.EPERM, "no")) is None
    (records / "connect-failed-1.json").write_text(json.dumps({"pid": 1, "time": time.time(), "socket": str(settings.socket_path)}))
    assert sandbox.failed_connects(settings.socket_path) == []


def test_the_bridge_records_a_refused_socket(short_dir: Path, records: Path) -> None:
    """The clients' connection attempt (the bridge's and the CLI's endpoint) that meets EPERM
    leaves the record doctor reads, and fails as "no broker" when it may not start one."""
    settings = settings_in(short_dir).with_changes(autostart=False)
    notes: list[str] = []
    reactor = MemoryReactor()
    connecting = AutostartEndpoint(reactor, settings, note=notes.append).connect(Factory.forProtocol(Protocol))
    [(path, factory, _timeout, _check)] = reactor.unixClients
    assert path == str(settings.socket_path)
    factory.clientConnectionFailed(None, Failure(ConnectError(errno.EPERM, "Operation not permitted")))
    failures: list[Failure] = []
    connecting.addErrback(failures.append)
    [failure] = failures
    assert failure.check(BrokerNotRunning) and "no broker is running" in failure.getErrorMessage()
    [record] = sandbox.failed_connects(settings.socket_path)
    assert record["errno"] == errno.EPERM and notes == [f"no broker answers at {settings.socket_path}"]


@pytest.fixture
def real_record(short_dir: Path) -> Iterator[Path]:
    """A Codex record in the real records folder, for a socket only this test uses."""
    settings = Settings.from_env(broker_env(short_dir))
    path = sandbox.note_failed_connect(settings, ConnectError(errno.EPERM, "Operation not permitted"),
                                       environ={"CODEX_SANDBOX": "seatbelt"})
    assert path is not None
    yield path
    path.unlink(missing_ok=True)


def test_doctor_names_the_sandbox_and_the_tcp_fix_then_checks_it(short_dir: Path, real_record: Path) -> None:
    """doctor: a Codex peer refused the socket -> install --codex --tcp; then the TCP broker must answer."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    env = broker_env(short_dir, CLAUDE_PEERS_PORT=str(port), PATH="/usr/bin:/bin")
    report = json.loads(cli(env, "doctor", "--json").stdout)
    [finding] = [f for f in report["findings"] if f["check"] == "sandbox"]
    assert finding["level"] == "problem" and "seatbelt" in finding["text"]
    assert finding["fix"].startswith("claude-peers install --codex --tcp") and "CLAUDE_PEERS_TCP=1" in finding["fix"]

    done = cli(env, "install", "--codex", "--tcp")
    assert done.returncode == 0, done.stderr
    assert "CLAUDE_PEERS_TCP=1" in done.stdout
    entry = tomllib.loads((short_dir / ".codex" / "config.toml").read_text())["mcp_servers"]["claude-peers"]
    # The socket is not the default one, so neither is the token file: it is named too.
    assert entry["env"] == {"CLAUDE_PEERS_URL": f"tcp://127.0.0.1:{port}",
                            "CLAUDE_PEERS_TOKEN_FILE": str(short_dir / "run" / "claude-peers.token")}

    def levels() -> dict[str, str]:
        found = check_codex_reach(Settings.from_env(env), short_dir)
        return {f.check: f.level for f in found}

    assert levels() == {"codex over tcp": "problem", "sandbox": "info"}  # nothing listens yet
    listener.listen(1)
    try:
        assert levels() == {"codex over tcp": "ok", "sandbox": "info"}
    finally:
        listener.close()


def test_the_tcp_env_lives_in_our_table_and_goes_with_it() -> None:
    """The env with CLAUDE_PEERS_URL is written into our table only; removing the table removes it."""
    before = 'model = "o3"\n'
    env = {"CLAUDE_PEERS_URL": "tcp://127.0.0.1:7899"}
    text = agent_config.codex_toml_add(before, ["/opt/cp/bin/claude-peers"], env=env)
    assert tomllib.loads(text)["mcp_servers"]["claude-peers"] == {
        "command": "/opt/cp/bin/claude-peers", "args": ["mcp"], "env": env}
    plain = agent_config.codex_toml_add(text, ["/opt/cp/bin/claude-peers"])
    assert "env" not in tomllib.loads(plain)["mcp_servers"]["claude-peers"]
    assert agent_config.codex_toml_remove(text) == before


def test_tcp_is_an_option_of_the_codex_install() -> None:
    """--tcp without --codex is a usage error; alone it means the default targets, Codex among them."""
    with pytest.raises(usage.UsageError, match="--tcp goes with --codex"):
        InstallOptions().parseOptions(["--claude", "--tcp"])
    options = InstallOptions()
    options.parseOptions(["--tcp"])
    assert options["codex"] and options["tcp"]
