"""The hostile-local-user attacks of issue 11 at full size, against real broker processes.

Run as root (setpriv, prlimit and unshare are used):

    .venv/bin/python bench/hostile.py

Prints one JSON line per attack with what was sent or held and what the broker did; the
figures are recorded in docs/reliability.md ("Hostile local user"). The quick versions of
these attacks are the tests in tests/test_hostile.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from claudepeers.wire import commands as wire  # noqa: E402
from conftest import BrokerProcess, broker_env  # noqa: E402
from raw_amp import Closed, RawAMP  # noqa: E402
from hostile_support import (  # noqa: E402
    AGENT_A, BRIDGE_OF_A, PID_REUSE_DRIVER, cli_status, endless_box, free_port, hung_up, rss_mib,
)


def with_broker(run: Callable[[BrokerProcess, Path, int], dict[str, Any]], wrapper: list[str] | None = None,
                **env: str) -> dict[str, Any]:
    """Start a broker with TCP in a fresh directory, run one attack, stop it."""
    base = Path(tempfile.mkdtemp(prefix="cp-h-", dir="/tmp"))
    port = free_port()
    broker = BrokerProcess(base, broker_env(base, **env), args=["--tcp", str(port)], wrapper=wrapper or []).start()
    try:
        result = run(broker, base, port)
        result["warnings in log"] = broker.log_text().count("[claudepeers")
        return result
    finally:
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)


def endless_boxes(broker: BrokerProcess, base: Path, port: int) -> dict[str, Any]:
    """One 1.2 GB box before the token, then 200 connections each sending 64 MB."""
    before = rss_mib(broker.process.pid)
    sock = socket.create_connection(("127.0.0.1", port))
    started = time.monotonic()
    first = endless_box(sock, 1200 * 2**20)
    sock.close()
    sent = []
    for _ in range(200):
        sock = socket.create_connection(("127.0.0.1", port))
        sent.append(endless_box(sock, 64 * 2**20))
        sock.close()
    return {"attack": "endless box before the token (TCP)", "attempted bytes": 1200 * 2**20 + 200 * 64 * 2**20,
            "bytes sent before the hang-up, first connection": first, "most sent before the hang-up, 200 more": max(sent),
            "seconds": round(time.monotonic() - started, 2),
            "rss MiB before/after": [round(before, 1), round(rss_mib(broker.process.pid), 1)]}


def other_uid_box(broker: BrokerProcess, base: Path, port: int) -> dict[str, Any]:
    """Another uid on the UNIX socket (modes loosened on purpose) sends a 1.2 GB box."""
    for path in (base, broker.socket_path.parent):
        os.chmod(path, 0o755)
    os.chmod(broker.socket_path, 0o666)
    before = rss_mib(broker.process.pid)
    script = textwrap.dedent(f"""
        import socket, sys
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]
        from hostile_support import endless_box
        sock = socket.socket(socket.AF_UNIX)
        sock.connect({str(broker.socket_path)!r})
        print(endless_box(sock, 1200 * 2**20))
    """)
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                             script], capture_output=True, text=True, timeout=300, cwd="/")
    return {"attack": "endless box from uid 65534 (UNIX)", "attempted bytes": 1200 * 2**20,
            "bytes sent before the hang-up": int(result.stdout.strip() or -1),
            "rss MiB before/after": [round(before, 1), round(rss_mib(broker.process.pid), 1)]}


def idle_connections(broker: BrokerProcess, base: Path, port: int) -> dict[str, Any]:
    """1,100 idle TCP and 1,500 idle UNIX connections under a 1,024-descriptor limit."""
    held: list[socket.socket] = []
    refused = 0
    for index in range(2600):
        try:
            if index < 1100:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            else:
                unix = socket.socket(socket.AF_UNIX)
                unix.connect(str(broker.socket_path))
                held.append(unix)
        except OSError:
            refused += 1
    started = time.monotonic()
    status = cli_status(broker.env)
    took = time.monotonic() - started
    closed_at_once = sum(1 for sock in held if hung_up(sock, timeout=0.01))
    closed_by_deadline = sum(1 for sock in held if hung_up(sock, timeout=15))
    for sock in held:
        sock.close()
    return {"attack": "idle connections before the token / registering", "connections opened": len(held),
            "connect() refused": refused, "status exit": status.returncode, "status seconds": round(took, 2),
            "closed at once (oldest made room)": closed_at_once,
            "closed by the deadline or earlier": closed_by_deadline}


def bound_connections(broker: BrokerProcess, base: Path, port: int) -> dict[str, Any]:
    """2,000 UNIX connections that each made a command (bound), under a 1,024-descriptor limit."""
    held: list[RawAMP] = []
    failed = 0
    for _ in range(2000):
        try:
            client = RawAMP.unix(str(broker.socket_path), timeout=2)
            client.call(wire.Status)
            held.append(client)
        except (Closed, OSError):
            failed += 1
    served = held[0].call(wire.Status)["status"]["pid"] == broker.process.pid
    for client in held[:100]:
        client.close()
    time.sleep(0.3)
    status = cli_status(broker.env)
    for client in held[100:]:
        client.close()
    log = broker.log_text()
    return {"attack": "descriptors exhausted by bound connections", "connections held": len(held),
            "refused for want of descriptors": failed, "held connection still served": served,
            "warnings 'out of file descriptors'": log.count("out of file descriptors"),
            "Twisted EMFILE lines in log": log.count("EMFILE"),
            "status after 100 closed, exit": status.returncode}


def pid_reuse(rounds: int) -> dict[str, Any]:
    """The stale-connection attack of the tests, ``rounds`` times, each in a new pid namespace."""
    outcomes = []
    for _ in range(rounds):
        base = Path(tempfile.mkdtemp(prefix="cp-h-", dir="/tmp"))
        env = broker_env(base)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
        result = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", sys.executable, "-c",
                                 PID_REUSE_DRIVER, str(base / "broker.log"), AGENT_A, BRIDGE_OF_A],
                                env=env, capture_output=True, text=True, timeout=60, cwd=str(base))
        report = json.loads(result.stdout.strip().splitlines()[-1])
        outcomes.append((report["reused"], report["register"].startswith("refused"),
                         "SUPERSEDED" in result.stderr))
        shutil.rmtree(base, ignore_errors=True)
    return {"attack": "pid reuse by a child of agent A", "pids reused": sum(o[0] for o in outcomes),
            "registers refused": sum(o[1] for o in outcomes), "bridges superseded": sum(o[2] for o in outcomes)}


def main() -> None:
    """Run every attack and print its figures."""
    print(json.dumps(with_broker(endless_boxes)))
    print(json.dumps(with_broker(other_uid_box)))
    print(json.dumps(with_broker(idle_connections, wrapper=["prlimit", "--nofile=1024:1024"])))
    print(json.dumps(with_broker(bound_connections, wrapper=["prlimit", "--nofile=1024:1024"])))
    print(json.dumps(pid_reuse(10)))


if __name__ == "__main__":
    main()
