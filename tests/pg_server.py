"""A PostgreSQL server of the test run's own: initdb and pg_ctl in a short temporary directory.

It listens on a UNIX socket in that directory only (no TCP, unless ``listen`` names an address
and ``hba`` the clients it trusts there, as the network namespace tests do), trusts local
connections, and is stopped by its postmaster's pid. PostgreSQL refuses to run as root: under root the server runs
as the ``postgres`` user (Debian's package makes it) through ``setpriv``, owning its directory.
The binaries come from ``CLAUDE_PEERS_TEST_PG_BIN`` or the newest ``/usr/lib/postgresql/*/bin``.

Tests get a fresh schema each (:meth:`PostgresServer.fresh_dsn`; a few milliseconds, where a
fresh database costs about 150 ms) or, when they need a database of their own (advisory locks
and LISTEN channels are per database), :meth:`PostgresServer.fresh_database`.
bench/ and the multi-host tests use the same class (``durable=True`` keeps fsync on).
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

#: How to get a server where there is none; the skip reason of every PostgreSQL test.
HOW_TO_GET = ("PostgreSQL server binaries not found (initdb, pg_ctl): apt-get install postgresql, "
              "or set CLAUDE_PEERS_TEST_PG_BIN to their directory; and pip install 'claude-peers[postgres]'")


def find_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl, or None."""
    given = os.environ.get("CLAUDE_PEERS_TEST_PG_BIN")
    candidates = [Path(given)] if given else sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


def unavailable() -> str | None:
    """Why PostgreSQL tests cannot run here (the skip reason), or None."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install 'claude-peers[postgres]' (or '.[test]')"
    if find_binaries() is None:
        return HOW_TO_GET
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as (apt-get install postgresql makes it)"
        if shutil.which("setpriv") is None:
            return "running as root and setpriv (util-linux) is missing to run the server as 'postgres'"
    return None


class PostgresServer:
    """One postmaster in a temporary directory; start, stop, restart, and fresh databases."""

    def __init__(self, durable: bool = False, settings: dict[str, str] | None = None,
                 listen: str | None = None, hba: list[str] | None = None) -> None:
        self.bin = find_binaries()
        if self.bin is None:
            raise RuntimeError(HOW_TO_GET)
        self.base = Path(tempfile.mkdtemp(prefix="cpg-", dir="/tmp"))
        self.data = self.base / "data"
        self.log_path = self.base / "server.log"
        self.durable = durable
        #: The TCP address clients outside the machine's namespace use, with its port, or None.
        self.listen = listen
        self.port = _free_port(listen) if listen else 5432
        self.settings = {"listen_addresses": listen or "", "port": str(self.port),
                         "unix_socket_directories": str(self.base),
                         "max_connections": "200", "shared_buffers": "32MB", **(settings or {})}
        self._hba = list(hba or [])
        if not durable:
            # Tests never outlive an operating system crash; a commit need not wait for the disk.
            self.settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        self._prefix: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self._prefix = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups"]
        os.chmod(self.base, 0o755)  # the socket inside must be reachable by the test's own user
        self._names = itertools.count(1)
        self.pid: int | None = None
        self._initdb()

    def _run(self, *command: str) -> None:
        # In the server's own directory: the postgres user may not enter the caller's (root's) one.
        result = subprocess.run([*self._prefix, *command], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                env={**os.environ, "LC_ALL": "C"}, cwd=self.base)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr or result.stdout}")

    def _initdb(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.writelines(f"{key} = '{value}'\n" for key, value in self.settings.items())
        if self._hba:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.writelines(f"{line}\n" for line in self._hba)

    def start(self) -> "PostgresServer":
        """Start the postmaster and wait until it accepts connections."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60", "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return self

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> None:
        """Stop the postmaster by its pid (SIGINT: fast shutdown; SIGKILL: a crash) and wait
        until it and its backends are gone (a new postmaster refuses to start before)."""
        import psutil

        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        try:
            postmaster = psutil.Process(pid)
            family = [postmaster, *postmaster.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        os.kill(pid, sig)
        _, alive = psutil.wait_procs(family, timeout=timeout)
        for process in alive:
            process.kill()
        psutil.wait_procs(alive, timeout=5)

    def restart(self, sig: int = signal.SIGINT) -> None:
        """Stop (fast shutdown, or a crash with SIGKILL) and start again on the same socket."""
        self.stop(sig)
        self.start()

    def close(self) -> None:
        """Stop the server (immediate shutdown: its data is thrown away) and remove its directory."""
        self.stop(signal.SIGQUIT)
        shutil.rmtree(self.base, ignore_errors=True)

    # --- connection strings --------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres", **options: str) -> str:
        """A key=value DSN for ``dbname`` on this server's socket."""
        extra = "".join(f" {key}={value}" for key, value in options.items())
        port = f" port={self.port}" if self.port != 5432 else ""
        return f"host={self.base}{port} user=postgres dbname={dbname}{extra}"

    def tcp_dsn(self, dbname: str = "postgres", **options: str) -> str:
        """A key=value DSN for ``dbname`` over TCP at the ``listen`` address."""
        if self.listen is None:
            raise RuntimeError("this server listens on its UNIX socket only")
        extra = "".join(f" {key}={value}" for key, value in options.items())
        return f"host={self.listen} port={self.port} user=postgres dbname={dbname}{extra}"

    def url(self, dbname: str = "postgres", password: str | None = None) -> str:
        """The same as a postgresql:// URL (the socket directory as its host parameter)."""
        secret = f":{password}" if password is not None else ""
        port = f"&port={self.port}" if self.port != 5432 else ""
        return f"postgresql://postgres{secret}@/{dbname}?host={self.base}{port}"

    def execute(self, statement: str, dbname: str = "postgres") -> list[tuple]:
        """Run one statement in autocommit on ``dbname``; its rows, if any."""
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=True) as connection:
            cursor = connection.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def fresh_database(self) -> str:
        """A new empty database; its name."""
        name = f"cp_{os.getpid()}_{next(self._names)}"
        self.execute(f"CREATE DATABASE {name} TEMPLATE template0 STRATEGY FILE_COPY")
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database made by :meth:`fresh_database` (closing its connections)."""
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def fresh_schema(self, dbname: str = "postgres") -> str:
        """A new empty schema in ``dbname``; its name."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.execute(f"CREATE SCHEMA {name}", dbname)
        return name

    def schema_dsn(self, schema: str, dbname: str = "postgres") -> str:
        """A DSN whose connections work in ``schema`` (it is their search_path)."""
        return self.dsn(dbname, options=f"'-c search_path={schema}'")

    def drop_schema(self, schema: str, dbname: str = "postgres") -> None:
        """Drop a schema made by :meth:`fresh_schema` and everything in it.

        A test that left a connection open in a transaction would block the drop: after a
        short wait, the other client connections of the database are ended and it is retried.
        """
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=True) as connection:
            connection.execute("SET lock_timeout = '2s'")
            try:
                connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            except psycopg.errors.LockNotAvailable:
                connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                                   "AND pid <> pg_backend_pid() AND backend_type = 'client backend'", (dbname,))
                connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _free_port(address: str) -> int:
    """A TCP port free on ``address`` now (the server binds it a moment later)."""
    import socket

    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]
