"""adbapi's pool on psycopg 3 for ``CLAUDE_PEERS_DB=postgresql://...`` (DESIGN 7).

adbapi runs the store's interactions as it does for SQLite (``paramstyle`` is ``pyformat``,
the dialect writes ``%s``); two things differ from its stock behaviour:

- a connection found broken after a failed interaction (the server restarted, the network
  went away) is dropped quietly and the interaction's own error is raised: the stock pool
  logs "Rollback failed" with a traceback and raises ``ConnectionLost`` instead, once per
  failed write while the database is away;
- each connection is told to send a Python ``bool`` as the integer 1 or 0, as sqlite3 does
  (the SQLite schema's flags are INTEGER columns);
- each connection has keepalives and a TCP user timeout on both sides (pgnet.py), so that a
  write during a partition fails within seconds (answered ``BrokerUnavailable``) instead
  of hanging for the kernel's quarter of an hour.
"""

from __future__ import annotations

from typing import Any

from twisted.enterprise import adbapi
from twisted.logger import Logger

from claudepeers.broker.storage import pgnet
from claudepeers.common import dsn as dsns


def configure(connection: Any) -> None:
    """Per-connection settings: booleans as 1/0; the server notices a vanished client (pgnet)."""
    import psycopg
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class BoolAsInteger(Dumper):
        oid = psycopg.adapters.types["int8"].oid

        def dump(self, obj: bool) -> bytes:
            return b"1" if obj else b"0"

    class BoolAsIntegerBinary(Dumper):
        format = Format.BINARY
        oid = psycopg.adapters.types["int8"].oid

        def dump(self, obj: bool) -> bytes:
            return b"\0\0\0\0\0\0\0\1" if obj else b"\0" * 8

    connection.adapters.register_dumper(bool, BoolAsInteger)
    # The store's bulk statements bind arrays in binary (%b): psycopg's C dumpers, no quoting.
    connection.adapters.register_dumper(bool, BoolAsIntegerBinary)
    pgnet.bound_server_side(connection)


class PostgresPool(adbapi.ConnectionPool):
    """A ConnectionPool of psycopg connections that drops broken ones without a traceback."""

    log = Logger()

    def __init__(self, dsn: str, **options: Any) -> None:
        self.dsn = dsn
        super().__init__("psycopg", dsn, cp_openfun=configure, cp_reconnect=True,
                         **{**pgnet.client_options(dsn), **options})

    def __getstate__(self) -> dict:
        # adbapi pickles its arguments for repr-like uses; never carry the password along.
        state = super().__getstate__()
        state["connargs"] = (dsns.display(self.dsn),)
        return state

    def _runInteraction(self, interaction: Any, *args: Any, **kw: Any) -> Any:
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                result = interaction(cursor, *args, **kw)
            connection.commit()
            return result
        except BaseException:
            self._after_failure(connection)
            raise

    def _runWithConnection(self, func: Any, *args: Any, **kw: Any) -> Any:
        connection = self.connect()
        try:
            result = func(connection, *args, **kw)
            connection.commit()
            return result
        except BaseException:
            self._after_failure(connection)
            raise

    def _after_failure(self, connection: Any) -> None:
        """Roll back; a connection that cannot be rolled back is closed and forgotten."""
        if not connection.closed and not connection.broken:
            try:
                connection.rollback()
                return
            except Exception:
                pass
        self.log.warn("database connection lost; the next interaction reconnects")
        self.disconnect(connection)


def open_pool(dsn: str, cp_max: int = 1) -> PostgresPool:
    """The store's pool for a PostgreSQL DSN (one connection by default, as for SQLite)."""
    return PostgresPool(dsn, cp_min=1, cp_max=cp_max)
