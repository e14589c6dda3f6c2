"""Helpers and scripts of the hostile-local-user tests (tests/test_hostile.py) and of
bench/hostile.py, which runs the same attacks at full size."""

from __future__ import annotations

import socket
import subprocess
import sys

import psutil


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mib(pid: int) -> float:
    """Resident memory of a process, in MiB."""
    return psutil.Process(pid).memory_info().rss / 2**20


def endless_box(sock: socket.socket, limit_bytes: int) -> int:
    """Write one box that never ends (60 KB values under one-byte keys) until the broker
    hangs up or ``limit_bytes`` are sent; returns the bytes sent."""
    value = b"v" * 60_000
    sent = 0
    sock.settimeout(10)
    try:
        index = 0
        while sent < limit_bytes:
            key = b"k%d" % index
            chunk = len(key).to_bytes(2, "big") + key + len(value).to_bytes(2, "big") + value
            sock.sendall(chunk)
            sent += len(chunk)
            index += 1
    except OSError:  # reset or broken pipe: the broker dropped us
        pass
    return sent


def hung_up(sock: socket.socket, timeout: float = 10.0) -> bool:
    """True when the other end closed the connection within ``timeout``."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def cli_status(env: dict[str, str]) -> subprocess.CompletedProcess:
    """`claude-peers status` as the operator runs it."""
    return subprocess.run([sys.executable, "-m", "claudepeers", "status"], env=env, capture_output=True,
                          text=True, timeout=60)


#: Agent A: on "bridge" starts its bridge (a child that registers for A and reports a
#: Superseded push); on "child" forks a child that sleeps, and prints its pid.
AGENT_A = """
import os, subprocess, sys
for line in sys.stdin:
    if line.strip() == "bridge":
        subprocess.Popen([sys.executable, "-c", sys.argv[1]])
    elif line.strip() == "child":
        print("CHILD", subprocess.Popen(["sleep", "60"]).pid, flush=True)
"""

BRIDGE_OF_A = """
import os, sys
from claudepeers.common import agents
from claudepeers.wire import commands as wire
from raw_amp import Closed, RawAMP
client = RawAMP.unix(os.environ["CLAUDE_PEERS_SOCKET"], timeout=30)
parent = agents.describe(os.getppid())
answer = client.call(wire.Register, agent_pid=parent.pid, agent_start=parent.start, client_type="unknown",
                     cwd="/", delivery="push", name="agent-a")
print("REGISTERED", answer["peer_id"], flush=True)
try:
    while True:
        box = client.read_box()
        if box.get(b"_command") == b"Superseded":
            print("SUPERSEDED", file=sys.stderr, flush=True)  # the test reads the driver's stderr
except (Closed, OSError):
    pass
"""

#: Runs inside a fresh pid namespace, so that setting ns_last_pid races nobody.
PID_REUSE_DRIVER = """
import json, os, socket, subprocess, sys, time
from claudepeers.common import agents
from claudepeers.wire import commands as wire
from raw_amp import RawAMP, RemoteError
from conftest import wait_for_socket
path = os.environ["CLAUDE_PEERS_SOCKET"]
log = open(sys.argv[1], "ab")
broker = subprocess.Popen([sys.executable, "-m", "claudepeers.broker.main"], stdout=log, stderr=log)
wait_for_socket(path, broker)
a = subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[3]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     text=True)
a.stdin.write("bridge\\n"); a.stdin.flush()
registered = a.stdout.readline().split()
stale = socket.socket(socket.AF_UNIX)
x = os.fork()
if x == 0:
    stale.connect(path)
    time.sleep(0.2)  # the broker accepts while this process still runs
    os._exit(0)
os.waitpid(x, 0)
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(str(x - 1))
a.stdin.write("child\\n"); a.stdin.flush()
reused = int(a.stdout.readline().split()[1]) == x
start = agents.describe(a.pid).start
try:
    RawAMP(stale).call(wire.Register, agent_pid=a.pid, agent_start=start, client_type="unknown", cwd="/",
                       delivery="push")
    outcome = "accepted"
except RemoteError as error:
    outcome = "refused: " + str(error)
time.sleep(0.3)  # time for a Superseded push to reach A's bridge, were there one
a.stdin.close()
a.terminate()
broker.terminate()
broker.wait(10)
print(json.dumps({"registered": registered[0], "reused": reused, "register": outcome}))
"""
