"""What the MCP client starts: hands its stdin/stdout to a fake agent, which runs the bridge.

``python bridge_relay.py AGENT_SOCKET PIDFILE [bridge args...]``: sends our stdin and
stdout to the fake agent (``fake_agent.py``) by SCM_RIGHTS, closes our copies (so
the bridge alone holds the pipes and sees their end), writes the bridge's pid to PIDFILE,
and exits with the bridge's status when it ends.
"""

from __future__ import annotations

import json
import os
import socket
import sys


def main() -> None:
    """Relay once, then wait for the bridge's end."""
    agent_socket, pidfile, *args = sys.argv[1:]
    connection = socket.socket(socket.AF_UNIX)
    connection.connect(agent_socket)
    # Settings given to this relay (CLAUDE_PEERS_*) reach the bridge, over the agent's own.
    env = {key: value for key, value in os.environ.items() if key.startswith("CLAUDE_PEER")}
    socket.send_fds(connection, [json.dumps({"args": args, "env": env}).encode()], [0, 1])
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    reader = connection.makefile("r")
    pid = reader.readline().strip()
    with open(pidfile + ".tmp", "w") as handle:
        handle.write(pid)
    os.replace(pidfile + ".tmp", pidfile)
    status = reader.readline().strip()
    os._exit(int(status) if status.lstrip("-").isdigit() else 1)


if __name__ == "__main__":
    main()
