"""How long a PostgreSQL connection may go unanswered over TCP before it counts as broken.

A partition (a cable pulled, a VPN down, a host's link cut) does not close a TCP connection:
without bounds a statement waits for the kernel to give up, a quarter of an hour, and so
does every send queued behind it, while ``status`` still says "connected". Each connection
of the broker (the store's pool, the host's heartbeat, the listener) therefore asks

- libpq, on its side, for keepalives and a TCP user timeout of :data:`TIMEOUT_SECONDS`: a
  statement whose packets go unacknowledged that long fails (the store answers
  ``BrokerUnavailable`` before the bridge's own call deadline, 5 s by default), and an idle
  connection is probed;
- the server, for the same on its side of the connection (settable by any role): a backend
  whose client vanished ends within seconds, and with it the locks it held (a host's
  advisory lock, a transaction's row locks), instead of after the kernel's two hours.

libpq ignores these on a UNIX socket, where a dead peer closes the connection at once. A
DSN that sets one of the libpq keywords itself keeps its own value.
"""

from __future__ import annotations

from typing import Any

from claudepeers.common import dsn as dsns

#: Seconds a TCP connection to the database may leave data unacknowledged.
TIMEOUT_SECONDS = 4.0

#: libpq keywords for every broker connection (strings, as in a DSN).
CLIENT_OPTIONS = {
    "keepalives": "1",
    "keepalives_idle": "2",
    "keepalives_interval": "1",
    "keepalives_count": "2",
    "tcp_user_timeout": str(int(TIMEOUT_SECONDS * 1000)),
}

#: The server's side: (setting, value) for SET on each new connection.
SERVER_SETTINGS = (
    ("tcp_keepalives_idle", "2"),
    ("tcp_keepalives_interval", "1"),
    ("tcp_keepalives_count", "2"),
    ("tcp_user_timeout", str(int(TIMEOUT_SECONDS * 1000))),
)


def client_options(dsn: str) -> dict[str, str]:
    """libpq keywords for a connection to ``dsn``: the usual defaults (dsn.connect_options)
    and :data:`CLIENT_OPTIONS`, less what the DSN sets itself."""
    return dsns.connect_options(dsn, CLIENT_OPTIONS)


def bound_server_side(connection: Any) -> None:
    """Ask the server to notice a vanished client of ``connection`` as fast (a no-op on a
    UNIX socket, where the server ignores these settings)."""
    for name, value in SERVER_SETTINGS:
        connection.execute(f"SET {name} = {value}")
    if not getattr(connection, "autocommit", True):
        connection.commit()  # a SET in an open transaction would be undone by a rollback
