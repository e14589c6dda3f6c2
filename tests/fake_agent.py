"""A stand-in agent session that starts MCP bridges and runs hook commands as its children.

Copied by the tests to an executable named ``claude`` or ``codex`` (so that the process
tree looks as under the real CLI). It listens on ``CP_AGENT_SOCKET`` for two requests:

- a bridge start: the relay (``bridge_relay.py``) started by the MCP client passes its stdin
  and stdout by SCM_RIGHTS, and ``python -m claudepeers.bridge.main`` runs on exactly those
  descriptors, so the bridge talks straight to the test's MCP client while its parent is
  the agent (a second bridge can start under the same agent, as at compaction); the
  bridge's pid, then its exit status, go back;
- ``{"run": "<shell command>", "stdin": "...", "env": {...}}``: runs the command through
  ``/bin/sh -c`` as Claude Code runs a hook (Codex runs it directly, one level less), with
  the text on its stdin, and answers ``{"status", "stdout", "stderr", "seconds"}`` as JSON.

Run as ``codex queue --thread ID --message TEXT`` it stands for Codex's queue command: it
appends its arguments and environment to ``queue.log`` beside itself and exits 0 (1 when
``queue.fail`` exists there).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def start_bridge(connection: socket.socket, request: dict, fds: list[int]) -> None:
    """Start one bridge on the passed descriptors and report its pid and exit status."""
    stdin_fd, stdout_fd = fds
    child = subprocess.Popen(
        [sys.executable, "-m", "claudepeers.bridge.main", *request.get("args", [])],
        stdin=stdin_fd,
        stdout=stdout_fd,
        env={**os.environ, **request.get("env", {})},
    )
    os.close(stdin_fd)
    os.close(stdout_fd)
    connection.sendall(f"{child.pid}\n".encode())
    status = child.wait()
    connection.sendall(f"{status}\n".encode())


def run_hook(connection: socket.socket, request: dict) -> None:
    """Run one hook command under this agent and send back what it did."""
    started = time.monotonic()
    done = subprocess.run(
        ["/bin/sh", "-c", request["run"]],
        input=request.get("stdin", "").encode(),
        capture_output=True,
        env={**os.environ, **request.get("env", {})},
        timeout=request.get("timeout", 30),
    )
    answer = {
        "status": done.returncode,
        "stdout": done.stdout.decode(errors="replace"),
        "stderr": done.stderr.decode(errors="replace"),
        "seconds": time.monotonic() - started,
    }
    connection.sendall(json.dumps(answer).encode())


def serve_one(connection: socket.socket) -> None:
    """Read one request (with or without descriptors) and serve it."""
    try:
        message, fds, _flags, _address = socket.recv_fds(connection, 1 << 20, 2)
        request = json.loads(message.decode() or "{}")
        if "run" in request:
            run_hook(connection, request)
        else:
            start_bridge(connection, request, fds)
    except (OSError, subprocess.SubprocessError):
        pass
    finally:
        connection.close()


def main() -> None:
    """Listen until SIGTERM (the default action: die at once, like an agent)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    server = socket.socket(socket.AF_UNIX)
    server.bind(os.environ["CP_AGENT_SOCKET"])
    server.listen(16)
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    while True:
        connection, _ = server.accept()
        threading.Thread(target=serve_one, args=(connection,), daemon=True).start()


def record_queue() -> int:
    """``codex queue ...``: record the call beside this executable."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "queue.log"), "a") as log:
        log.write(json.dumps({"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}) + "\n")
    return 1 if os.path.exists(os.path.join(here, "queue.fail")) else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["queue"]:
        sys.exit(record_queue())
    main()
