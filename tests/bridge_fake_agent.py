"""A stand-in agent session (``claude`` or ``codex``) that starts MCP bridges as its children.

The tests copy this file to an executable named ``claude`` or ``codex`` (so that
``agents.find_agent`` recognises it, as it would the real CLI) and start it with the argv a
real agent would have, e.g. ``claude --dangerously-load-development-channels
server:claude-peers``. It listens on a UNIX socket (``CP_AGENT_SOCKET``). A relay
(``bridge_relay.py``) started by the MCP client connects, passes its stdin and stdout by
SCM_RIGHTS, and this process starts ``python -m claudepeers.bridge.main`` on exactly those
descriptors: the bridge talks straight to the test's MCP client while its parent is the
agent, as under Claude Code, and a second bridge can be started under the same agent
(as Claude Code does at compaction). The bridge's pid goes back to the relay, and its
exit status after it ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading


def serve_one(connection: socket.socket) -> None:
    """Start one bridge on the passed descriptors and report its pid and exit status."""
    try:
        message, fds, _flags, _address = socket.recv_fds(connection, 65536, 2)
        request = json.loads(message.decode() or "{}")
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
    except OSError:
        pass
    finally:
        connection.close()


def main() -> None:
    """Listen for relays until SIGTERM (the default action: die at once, like an agent)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    path = os.environ["CP_AGENT_SOCKET"]
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(16)
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    while True:
        connection, _ = server.accept()
        threading.Thread(target=serve_one, args=(connection,), daemon=True).start()


if __name__ == "__main__":
    main()
