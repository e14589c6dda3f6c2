"""PostgreSQL as the store's engine: telling a DSN from a path, masking its password, the schema
translation of every shipped file, and prepare() on databases that are not ours or too new.

The first part needs no server; the rest uses the run's own PostgreSQL (skipped, saying how to
get one, where there is none). The store's behaviour itself is tested on both engines in
test_storage.py and test_model.py.
"""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from claudepeers.broker.storage import DatabaseError, database, prepare
from claudepeers.broker.storage.dialect import POSTGRESQL, SQLITE, SchemaError, translate
from claudepeers.common import dsn as dsns
from claudepeers.common.settings import Settings

from engines import query, tables

# --- DSNs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "postgresql://peers@db.example/peers", "postgres://u:pw@h:5432/d?sslmode=require",
    "POSTGRESQL://h/d", "host=/run/pg dbname=peers", "  dbname=peers user=me", "service=peers",
])
def test_postgresql_urls_and_dsns_are_recognised(value: str) -> None:
    """URLs of both schemes and libpq key=value strings name PostgreSQL."""
    assert dsns.is_postgres(value)


@pytest.mark.parametrize("value", [
    "/home/me/.claude-peers.db", "peers.db", "a=b.db", "./host=x", "postgresql.db", "C:\\peers.db", "",
])
def test_sqlite_paths_stay_paths(value: str) -> None:
    """A file path, even one with ``=`` in it, is a SQLite path as before."""
    assert not dsns.is_postgres(value)


@pytest.mark.parametrize("dsn, shown", [
    ("postgresql://peer:s3cret@db:5432/peers", "postgresql://peer:***@db:5432/peers"),
    ("postgresql://peer@db/peers?password=s3cret&sslmode=require", "postgresql://peer@db/peers?password=***&sslmode=require"),
    ("host=db user=peer password=s3cret dbname=peers", "host=db user=peer password=*** dbname=peers"),
    ("host=db password='s3 cret' dbname=peers", "host=db password=*** dbname=peers"),
    ("postgres://peer:s3cret@[bad/peers", "postgres://***@[bad/peers"),
    ("postgresql://peer@db/peers", "postgresql://peer@db/peers"),
])
def test_display_masks_every_form_of_password(dsn: str, shown: str) -> None:
    """What status and logs show of a DSN: the password replaced by ***, the rest as given."""
    assert dsns.display(dsn) == shown
    assert "s3" not in dsns.display(dsn)


def test_scrub_masks_a_password_inside_a_drivers_message() -> None:
    """libpq echoes a malformed URI, password and all: scrub() masks it (percent-encoded too)."""
    dsn = "postgres://peer:p%40ss@[bad/peers"
    message = f'end of string reached when looking for matching "]" in IPv6 host address in URI: "{dsn}"'
    scrubbed = dsns.scrub(message, dsn)
    assert "p%40ss" not in scrubbed and "p@ss" not in scrubbed and "***" in scrubbed


def test_settings_keep_a_dsn_as_text_and_show_it_masked(tmp_path: Path) -> None:
    """CLAUDE_PEERS_DB=postgresql://... is kept whole (a Path would fold its //) and shown masked;
    the SQLite path stays the default file, beside which the TCP key lives."""
    dsn = "postgresql://peer:s3cret@db/peers"
    settings = Settings.from_env({"HOME": str(tmp_path), "CLAUDE_PEERS_DB": dsn})
    assert settings.database == dsn and settings.db_dsn == dsn
    assert settings.database_display == "postgresql://peer:***@db/peers"
    assert settings.db_path == tmp_path / ".claude-peers.db"
    plain = Settings.from_env({"HOME": str(tmp_path), "CLAUDE_PEERS_DB": str(tmp_path / "x.db")})
    assert plain.db_dsn is None and plain.database == str(tmp_path / "x.db")


def test_a_started_broker_gets_the_dsn_in_its_environment_not_its_command_line(tmp_path: Path) -> None:
    """Other users can read a command line: the DSN goes to the broker through its environment."""
    from claudepeers.common.client import broker_command, broker_env

    dsn = "postgresql://peer:s3cret@db/peers"
    settings = Settings.from_env({"HOME": str(tmp_path), "CLAUDE_PEERS_DB": dsn})
    assert not any("s3cret" in part for part in broker_command(settings))
    assert "--db" not in broker_command(settings)
    assert broker_env(settings)["CLAUDE_PEERS_DB"] == dsn


@pytest.mark.parametrize("dsn, kept", [
    ("postgresql://peer:s3cret@db:5/peers?password=s3cret&sslmode=require", "postgresql://peer@db:5/peers?sslmode=require"),
    ("host=db password='s3 cret' dbname=peers", "host=db dbname=peers"),
    ("postgresql://peer@db/peers", "postgresql://peer@db/peers"),
])
def test_a_service_file_gets_the_dsn_without_its_password(dsn: str, kept: str) -> None:
    """What install writes into a service file (readable by others): the DSN, no password in it."""
    assert dsns.without_password(dsn) == kept


def test_doctor_names_the_postgresql_database_masked_and_checks_no_file(tmp_path: Path) -> None:
    """doctor with CLAUDE_PEERS_DB a DSN: one line naming it (password masked), no file findings."""
    from claudepeers.cli.doctor import check_files

    settings = Settings.from_env({"HOME": str(tmp_path), "CLAUDE_PEERS_DB": "postgresql://peer:s3cret@db/peers"})
    findings = [f for f in check_files(settings, tmp_path) if f.check == "database"]
    assert [f.text for f in findings] == ["PostgreSQL: postgresql://peer:***@db/peers"]


# --- the schema translation ------------------------------------------------------------------------


def _shipped() -> list[str]:
    folder = resources.files("claudepeers.broker.storage").joinpath("schema")
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))


@pytest.mark.parametrize("name", _shipped())
def test_every_shipped_schema_file_translates(name: str) -> None:
    """Every vN.sql and upgrade_to_vN.sql has a PostgreSQL form with nothing SQLite-only left."""
    text = translate(database._schema_text(name), name)
    for sqlite_only in ("AUTOINCREMENT", "PRAGMA", "VARCHAR"):
        assert sqlite_only not in text.upper()


def test_translation_rules() -> None:
    """Ids become identity columns, integers 64-bit, lengths unenforced (as on SQLite)."""
    text = translate("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, "
                     "name VARCHAR(16), r REAL, b BLOB);")
    assert text.strip() == ("CREATE TABLE t (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, n BIGINT NOT NULL, "
                            "name TEXT, r DOUBLE PRECISION, b BYTEA);")


def test_engine_blocks_give_each_engine_its_own_statements() -> None:
    """Lines under ``--@ sqlite`` / ``--@ postgresql`` go to that engine only; ``--@ both`` ends them."""
    text = ("CREATE TABLE a (x INTEGER);\n--@ sqlite\nCREATE VIRTUAL TABLE f USING fts5(x);\n"
            "--@ postgresql\nCREATE INDEX f ON a USING gin (to_tsvector('simple', x::text));\n--@ both\n"
            "CREATE INDEX a_x ON a (x);\n")
    lite, pg = SQLITE.script(text), POSTGRESQL.script(text)
    assert "fts5" in lite and "gin" not in lite and "a_x" in lite and "INTEGER" in lite
    assert "fts5" not in pg and "gin" in pg and "a_x" in pg and "BIGINT" in pg


@pytest.mark.parametrize("statement", [
    "PRAGMA foreign_keys=ON;", "CREATE VIRTUAL TABLE f USING fts5(x);", "INSERT OR IGNORE INTO t VALUES (1);",
    "CREATE TABLE t (x INTEGER) WITHOUT ROWID;", "CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; END;",
])
def test_sqlite_only_statements_outside_a_sqlite_block_are_refused(statement: str) -> None:
    """A new schema version cannot silently break PostgreSQL: the translation names the line."""
    with pytest.raises(SchemaError, match="line 2"):
        translate(f"-- v9\n{statement}\n", "v9.sql")
    assert "--@" not in SQLITE.script(f"--@ sqlite\n{statement}\n--@ both\n")


def test_an_unclosed_engine_block_is_refused() -> None:
    """A block must end with ``--@ both`` (else the rest of the file would be one engine's)."""
    with pytest.raises(SchemaError, match="not closed"):
        translate("--@ postgresql\nSELECT 1;\n")


# --- prepare() on PostgreSQL -------------------------------------------------------------------------


def test_another_applications_database_is_refused_and_left_alone(pg_dsn: str) -> None:
    """A schema with a table of ours but no versions table is not ours: refused, untouched."""
    query(pg_dsn, "CREATE TABLE peers (name TEXT)")
    query(pg_dsn, "INSERT INTO peers VALUES ('theirs')")
    with pytest.raises(DatabaseError, match="not a claude-peers database"):
        prepare(pg_dsn)
    assert tables(pg_dsn) == {"peers"} and query(pg_dsn, "SELECT name FROM peers") == [("theirs",)]


def test_an_empty_versions_table_is_refused(pg_dsn: str) -> None:
    """A versions table without its row is refused rather than guessed at."""
    prepare(pg_dsn)
    query(pg_dsn, "DELETE FROM versions")
    with pytest.raises(DatabaseError, match="versions table is empty"):
        prepare(pg_dsn)


def test_a_too_new_database_is_refused_naming_both_versions(pg_dsn: str) -> None:
    """A database of a newer claude-peers is refused, naming its version and ours; nothing changes."""
    prepare(pg_dsn)
    newer = database.latest_version() + 1
    query(pg_dsn, "UPDATE versions SET version = ?", (newer,))
    with pytest.raises(DatabaseError, match=f"v{newer}, newer than this claude-peers \\(v{database.latest_version()}\\)"):
        prepare(pg_dsn)
    assert query(pg_dsn, "SELECT version FROM versions") == [(newer,)]


def test_a_failed_upgrade_rolls_back_whole(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upgrade script failing half way leaves the database at its old version and schema."""
    from engines import create, dump_schema

    create(pg_dsn, 2)
    before = dump_schema(pg_dsn)
    real = database._schema_text

    def broken(name: str) -> str:
        return "ALTER TABLE messages ADD COLUMN nowhere_ok TEXT;\nSELECT * FROM no_such_table;" if name == "upgrade_to_v4.sql" else real(name)

    monkeypatch.setattr("claudepeers.broker.storage.pgdatabase._schema_text", broken)
    with pytest.raises(DatabaseError, match="no_such_table"):
        prepare(pg_dsn)
    assert query(pg_dsn, "SELECT version FROM versions") == [(2,)]
    assert dump_schema(pg_dsn) == before


def test_brokers_starting_at_once_create_the_schema_once(pg_dsn: str) -> None:
    """Four prepare() calls at once on an empty database (hosts starting together): one creates,
    the others wait on the schema lock and find it made; none fails."""
    results: list[Any] = []

    def run() -> None:
        try:
            results.append(prepare(pg_dsn))
        except Exception as exc:  # noqa: BLE001 - the test reports whatever it was
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [database.latest_version()] * 4
    assert query(pg_dsn, "SELECT COUNT(*) FROM versions") == [(1,)]


def test_an_unreachable_server_is_a_clear_error_without_the_password(short_dir: Path) -> None:
    """No server at the DSN: DatabaseError naming the database, its password masked."""
    dsn = f"postgresql://peer:s3cret-pw@/peers?host={short_dir}"
    with pytest.raises(DatabaseError) as error:
        prepare(dsn)
    assert "cannot connect to the database postgresql://peer:***@/peers" in str(error.value)
    assert "s3cret-pw" not in str(error.value)


def test_a_malformed_dsn_is_a_clear_error_without_the_password() -> None:
    """libpq echoes a malformed URI in its message: the password is masked there too."""
    with pytest.raises(DatabaseError) as error:
        prepare("postgres://peer:s3cret-pw@[bad/peers")
    assert "s3cret-pw" not in str(error.value) and "***" in str(error.value)


def test_the_url_form_of_a_dsn_works(pg_server: Any) -> None:
    """prepare() through a postgresql:// URL (the socket directory as its host parameter)."""
    name = pg_server.fresh_database()
    try:
        assert prepare(pg_server.url(name)) == database.latest_version()
        assert "messages" in tables(pg_server.url(name))
    finally:
        pg_server.drop_database(name)


# --- input PostgreSQL's text cannot hold ------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_a_nul_character_is_refused_alike_on_both_engines(db_target: str, short_dir: Path) -> Any:
    """PostgreSQL's text cannot hold U+0000: a body, summary or cwd with one is InvalidArgument on
    both engines (not a database error on one of them), and nothing else is affected."""
    from claudepeers.common.errors import InvalidArgument

    from broker_fakes import FakeBridge, World

    world = World(short_dir, database=db_target if dsns.is_postgres(db_target) else None)
    try:
        yield world.broker.start()
        alice_pid, alice_bridge = world.agent()
        bob_pid, bob_bridge = world.agent()
        alice, _ = yield world.register(alice_pid, alice_bridge, FakeBridge())
        bob, _ = yield world.register(bob_pid, bob_bridge, FakeBridge(delivery="none"), delivery="none")
        for attempt, text in ((lambda: world.broker.send(alice, bob.id, "bad\x00body"), "message contains a NUL"),
                              (lambda: world.broker.set_summary(alice, "bad\x00summary"), "summary contains a NUL"),
                              (lambda: world.register(*world.agent(), FakeBridge(), cwd="/work/\x00x"), "cwd contains a NUL")):
            with pytest.raises(InvalidArgument, match=text):
                yield attempt()
        answer = yield world.broker.send(alice, bob.id, "fine")
        assert answer["status"] == "queued"
    finally:
        yield world.close()


def test_a_database_error_reaching_a_caller_has_its_password_masked() -> None:
    """A driver's error turned into StoreError (what the broker answers as BrokerUnavailable)
    never carries the DSN's password, whatever the driver put in its message."""
    import psycopg
    from twisted.python.failure import Failure

    from claudepeers.broker.storage.store import StoreError, as_store_error

    dsn = "postgresql://peer:s3cret-pw@db/peers"
    try:
        raise psycopg.OperationalError(f'connection to "{dsn}" failed: server closed the connection')
    except psycopg.OperationalError:
        failure = as_store_error(Failure(), POSTGRESQL, dsn=dsn)
    assert failure.check(StoreError)
    assert "s3cret-pw" not in failure.getErrorMessage() and "postgresql://peer:***@db/peers" in failure.getErrorMessage()
