"""The schema files shipped in ``schema/`` (``vN.sql``, ``upgrade_to_vN.sql``) and the error
of a database that cannot be used: what the SQLite (database.py) and the PostgreSQL
(pgdatabase.py) creation and upgrade share.
"""

from __future__ import annotations

import re
from importlib import resources


class DatabaseError(Exception):
    """The database cannot be used; the message says which file and why."""


def _schema_text(name: str) -> str:
    """A schema file as shipped (both engines' parts; see dialect.py)."""
    return resources.files("claudepeers.broker.storage").joinpath("schema", name).read_text("utf-8")


def latest_version() -> int:
    """The highest ``vN.sql`` shipped with the package."""
    names = [p.name for p in resources.files("claudepeers.broker.storage").joinpath("schema").iterdir()]
    versions = [int(m.group(1)) for n in names if (m := re.fullmatch(r"v(\d+)\.sql", n))]
    return max(versions)
