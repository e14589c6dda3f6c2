"""Shared fixtures: short temporary directories and real broker processes.

UNIX socket paths are limited to 107 bytes, so test directories live under /tmp with a
short prefix rather than under pytest's long ``tmp_path``. Every process a fixture
starts is ended by its pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, settings

from claudepeers.common.settings import Settings

# Hypothesis profiles. "shared-machine", for every run: the machine is shared (2 cores, often
# several test runs at once), so generation speed and per-example time say nothing about the
# code. "ci" (chosen when CI=true, as CI services and .ci/run set it): the same, derandomized,
# so a CI failure repeats on the next run and on a laptop, and printing the blob that
# reproduces a failing example. Tests that want another example count set it themselves;
# HYPOTHESIS_PROFILE names a profile outright.
settings.register_profile("shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", settings.get_profile("shared-machine"), derandomize=True, print_blob=True)


def hypothesis_profile(environ: dict[str, str]) -> str:
    """The Hypothesis profile a run in ``environ`` uses."""
    default = "ci" if environ.get("CI", "").lower() in ("true", "1") else "shared-machine"
    return environ.get("HYPOTHESIS_PROFILE", default)


settings.load_profile(hypothesis_profile(dict(os.environ)))

ROOT = Path(__file__).resolve().parent.parent


def pytest_report_header() -> str:
    """Say which platform implementations this run uses (CLAUDE_PEERS_PORTABLE=1 forces psutil's)."""
    from claudepeers.common import platforms

    return f"claude-peers platforms: {platforms.SYSTEM}, portable={platforms.PORTABLE}, is_alive={platforms.is_alive.__name__}"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A fresh short directory under /tmp, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="cp-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """The run's own PostgreSQL server (tests/pg_server.py), started on first use.

    Where there is none the test is skipped, saying how to get one; with
    CLAUDE_PEERS_REQUIRE_PG=1 (as in .ci/run) it fails instead, so CI cannot pass by skipping.
    """
    import pg_server as servers

    reason = servers.unavailable()
    if reason is not None:
        if os.environ.get("CLAUDE_PEERS_REQUIRE_PG") == "1":
            pytest.fail(f"CLAUDE_PEERS_REQUIRE_PG=1 but {reason}")
        pytest.skip(reason)
    server = servers.PostgresServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_dsn(pg_server: Any) -> Iterator[str]:
    """A DSN of a fresh, empty schema on the run's PostgreSQL server (dropped afterwards)."""
    schema = pg_server.fresh_schema()
    try:
        yield pg_server.schema_dsn(schema)
    finally:
        pg_server.drop_schema(schema)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> str:
    """Each engine in turn: tests using it (or ``db_target``) run on SQLite and on PostgreSQL."""
    return request.param


@pytest.fixture
def db_target(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where the test's database is: a SQLite path (not yet created) or a PostgreSQL DSN."""
    if engine == "sqlite":
        return str(tmp_path / "peers.db")
    return request.getfixturevalue("pg_dsn")


@pytest.fixture
def world(short_dir: Path) -> Iterator[Any]:
    """A started in-process broker world (``broker_fakes.World``), closed after the test."""
    import pytest_twisted

    from broker_fakes import World

    w = World(short_dir)
    pytest_twisted.blockon(w.broker.start())
    yield w
    pytest_twisted.blockon(w.close())


def broker_env(base: Path, **extra: str) -> dict[str, str]:
    """An environment whose HOME, socket and database all live under ``base``."""
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("CLAUDE_PEER"):
            del env[name]
    env.update(
        HOME=str(base),
        CLAUDE_PEERS_SOCKET=str(base / "run" / "cp.sock"),
        CLAUDE_PEERS_DB=str(base / "peers.db"),
        CLAUDE_PEERS_NO_AUTOSTART="1",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    env.update(extra)
    return env


def home_env(base: Path, **extra: str) -> dict[str, str]:
    """:func:`broker_env` with the socket and database at their default paths under HOME ``base``.

    Real agent CLIs pass only a few variables (HOME, PATH...) to their MCP servers and
    hooks: a bridge one starts finds the broker through HOME alone.
    """
    return broker_env(base, **{"CLAUDE_PEERS_SOCKET": str(base / ".claude" / "run" / "claude-peers.sock"),
                               "CLAUDE_PEERS_DB": str(base / ".claude-peers.db"), **extra})


def wait_for_socket(path: Path, process: subprocess.Popen | None = None, timeout: float = 10.0) -> None:
    """Block until something accepts connections at ``path`` (the broker is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"broker exited with status {process.returncode}")
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(path))
            return
        except OSError:
            pass
        finally:
            probe.close()
        time.sleep(0.01)  # waiting on another process's start; nothing to subscribe to
    raise TimeoutError(f"no broker answered at {path} within {timeout} s")


@dataclass
class BrokerProcess:
    """A broker running as a real subprocess for a test."""

    base: Path
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None
    #: A command the broker runs under (e.g. ``prlimit --nofile=64:128``).
    wrapper: list[str] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        """Settings as a client in this test's environment would read them."""
        return Settings.from_env(self.env)

    @property
    def socket_path(self) -> Path:
        """The broker's UNIX socket."""
        return Path(self.env["CLAUDE_PEERS_SOCKET"])

    @property
    def log_path(self) -> Path:
        """Where the broker's log goes."""
        return self.base / "broker.log"

    def start(self) -> "BrokerProcess":
        """Start the broker and wait until it listens."""
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [*self.wrapper, sys.executable, "-m", "claudepeers.broker.main", *self.args],
            env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
        log.close()
        wait_for_socket(self.socket_path, self.process)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal the broker by pid and wait for it to exit; returns its status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        status = self.process.returncode
        self.process = None
        return status

    def log_text(self) -> str:
        """The broker's log so far (for assertion messages)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def broker_process(short_dir: Path) -> Iterator[BrokerProcess]:
    """A running broker subprocess in a short temporary directory."""
    broker = BrokerProcess(short_dir, broker_env(short_dir)).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def make_agent(broker_process: BrokerProcess) -> Iterator[Any]:
    """Start stand-in agents (``bridge_support.started_agents``) in the broker's environment;
    all are ended afterwards, by pid."""
    from bridge_support import started_agents

    with started_agents(broker_process) as make:
        yield make


@pytest.fixture
def home_broker(short_dir: Path) -> Iterator[BrokerProcess]:
    """A running broker at the default paths under a HOME that is the test's directory
    (:func:`home_env`), with only the system's bin folders on PATH."""
    broker = BrokerProcess(short_dir, home_env(short_dir, PATH="/usr/bin:/bin")).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def scenario() -> Iterator[list[Any]]:
    """Scenarios the test starts (each with a ``stop()`` that ends its processes by pid);
    each is stopped afterwards, whatever the test's outcome."""
    started: list[Any] = []
    yield started
    for one in started:
        one.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave ``@pytest.mark.slow`` tests out of a run that names no marker expression.

    ``pytest`` (and ``.ci/run``) run the quick suite; ``pytest -m slow`` runs the long fault,
    fuzz and model runs; ``pytest -m "slow or not slow"`` runs everything.
    """
    if config.option.markexpr:
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture(autouse=True)
def no_logged_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """A failure logged through Twisted while a test runs (an "Unhandled Error", an
    unhandled error in a Deferred, ``log.failure``) fails that test.

    A test that provokes such a log line on purpose says so with
    ``@pytest.mark.logs_errors``.
    """
    from twisted.logger import globalLogPublisher

    errors: list[dict] = []

    def observe(event: dict) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(observe)
    if errors and request.node.get_closest_marker("logs_errors") is None:
        from twisted.logger import formatEvent

        texts = []
        for event in errors[:3]:
            failure = event.get("log_failure")
            texts.append(formatEvent(event) + (f"\n{failure.getTraceback()}" if failure is not None else ""))
        pytest.fail(f"{len(errors)} error(s) logged during the test:\n" + "\n".join(texts), pytrace=False)
