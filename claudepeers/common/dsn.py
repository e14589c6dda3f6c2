"""PostgreSQL connection strings in ``CLAUDE_PEERS_DB``: telling them from a SQLite path, and
keeping their password out of every log line, error and status (DESIGN 7).

No Twisted and no psycopg here (settings, the CLI and the hook import it): a value is a
PostgreSQL DSN when it is a ``postgresql://`` or ``postgres://`` URL, or a libpq
``key=value`` string whose first key is one of libpq's keywords (so a file named
``a=b.db`` stays a SQLite path). Anything else is a SQLite path, as before.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit, urlunsplit

#: libpq's connection keywords (PostgreSQL 15 "Parameter Key Words").
KEYWORDS = frozenset("""
    host hostaddr port dbname user password passfile channel_binding connect_timeout client_encoding
    options application_name fallback_application_name keepalives keepalives_idle keepalives_interval
    keepalives_count tcp_user_timeout replication gssencmode sslmode requiressl sslcompression sslcert
    sslkey sslpassword sslrootcert sslcrl sslcrldir sslsni requirepeer ssl_min_protocol_version
    ssl_max_protocol_version krbsrvname gsslib service target_session_attrs load_balance_hosts
""".split())
_URL = re.compile(r"^postgres(?:ql)?://", re.I)
_FIRST_KEY = re.compile(r"^\s*([a-z_]+)\s*=")
#: A ``password=`` (or ``sslpassword=``) value in a key=value string: quoted or bare.
_KV_SECRET = re.compile(r"(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']+)", re.I)
_QUERY_SECRET = re.compile(r"((?:^|[?&])(?:ssl)?password=)([^&#]*)", re.I)
MASK = "***"


def is_postgres(value: str | os.PathLike | None) -> bool:
    """True when ``value`` is a PostgreSQL URL or key=value DSN rather than a SQLite path."""
    if not isinstance(value, str):
        return False
    if _URL.match(value):
        return True
    first = _FIRST_KEY.match(value)
    return first is not None and first.group(1) in KEYWORDS


def display(dsn: str) -> str:
    """``dsn`` as it may be shown: its passwords replaced by ``***``."""
    if _URL.match(dsn):
        try:
            parts = urlsplit(dsn)
        except ValueError:
            return _mask_url_by_hand(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostpart = netloc.rpartition("@")
            if ":" in userinfo:
                userinfo = userinfo.split(":", 1)[0] + ":" + MASK
            netloc = f"{userinfo}@{hostpart}"
        query = _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, parts.query)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return _KV_SECRET.sub(lambda m: m.group(1) + MASK, dsn)


def without_password(dsn: str) -> str:
    """``dsn`` with its passwords left out (for a file others may read: libpq then takes the
    password from ~/.pgpass or PGPASSWORD)."""
    if _URL.match(dsn):
        head, _, rest = dsn.partition("://")
        netloc, slash, tail = rest.partition("/")
        if "@" in netloc:
            userinfo, _, hostpart = netloc.rpartition("@")
            netloc = userinfo.split(":", 1)[0] + "@" + hostpart
        tail = re.sub(r"(?i)([?&])(?:ssl)?password=[^&#]*&?", r"\1", tail).replace("?&", "?").rstrip("?&")
        return f"{head}://{netloc}{slash}{tail}"
    return re.sub(r"\s+", " ", _KV_SECRET.sub("", dsn)).strip()


def _mask_url_by_hand(dsn: str) -> str:
    # An unparsable URL (a broken IPv6 bracket): mask everything between :// and the last @.
    head, _, rest = dsn.partition("://")
    if "@" in rest:
        rest = MASK + "@" + rest.rpartition("@")[2]
    return _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, f"{head}://{rest}")


def secrets(dsn: str) -> list[str]:
    """Every password ``dsn`` carries, raw and decoded (and PGPASSWORD's), longest first."""
    found: set[str] = set()
    if _URL.match(dsn):
        netloc = dsn.split("://", 1)[1].split("/", 1)[0]
        if "@" in netloc:
            userinfo = netloc.rpartition("@")[0]
            if ":" in userinfo:
                found.add(userinfo.split(":", 1)[1])
        found.update(m.group(2) for m in _QUERY_SECRET.finditer(dsn.partition("?")[2]))
    else:
        for match in _KV_SECRET.finditer(dsn):
            value = match.group(2)
            found.add(value)
            if value.startswith("'"):
                found.add(re.sub(r"\\(.)", r"\1", value[1:-1]))
    found.update({unquote(s) for s in found})
    if os.environ.get("PGPASSWORD"):
        found.add(os.environ["PGPASSWORD"])
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub(text: str, dsn: str) -> str:
    """``text`` (an error message, a log line) with the DSN and its passwords masked."""
    text = text.replace(dsn, display(dsn))
    for secret in secrets(dsn):
        text = text.replace(secret, MASK)
    return text


def given_keywords(dsn: str) -> set[str]:
    """The libpq keywords ``dsn`` sets itself (a URL's query parameters, or key=value pairs)."""
    if _URL.match(dsn):
        return {key.lower() for key, _, _ in (p.partition("=") for p in dsn.partition("?")[2].split("&"))}
    return {m.group(1).lower() for m in re.finditer(r"([a-z_]+)\s*=", dsn, re.I)}


def connect_options(dsn: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Defaults libpq gets unless the DSN says otherwise: a bounded connect, our name in
    pg_stat_activity, and any ``extra`` keywords."""
    options = {"connect_timeout": "10", "application_name": "claude-peers", **(extra or {})}
    given = given_keywords(dsn)
    return {key: value for key, value in options.items() if key not in given}
