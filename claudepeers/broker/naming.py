"""Peer ids and names: short random ids, unique human-readable names (DESIGN 4)."""

from __future__ import annotations

import os
import re
import secrets
import string
from typing import Any, Iterable

from claudepeers.broker.records import CLI_ID, GONE
from claudepeers.common.errors import InvalidArgument, LimitExceeded, NameTaken

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: A thread id as agents make them (Codex: a UUID); bounded, printable, no spaces.
THREAD_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
ID_ALPHABET = string.ascii_lowercase + string.digits


def new_id(taken: Any) -> str:
    """An 8-character ``[a-z0-9]`` id not in ``taken`` (and never 'cli')."""
    while True:
        candidate = "".join(secrets.choice(ID_ALPHABET) for _ in range(8))
        if candidate not in taken and candidate != CLI_ID:
            return candidate


def check_name(name: str, max_chars: int) -> str:
    """A valid name or InvalidArgument / LimitExceeded naming the rule."""
    if len(name) > max_chars:
        raise LimitExceeded(
            f"name is {len(name)} characters; the limit is {max_chars} (max_name_chars, CLAUDE_PEERS_MAX_NAME_CHARS)"
        )
    if not NAME_PATTERN.match(name):
        raise InvalidArgument(
            f"name {name!r} must start with a letter or digit and contain only letters, digits, '.', '_' and '-'"
        )
    if name == CLI_ID:
        raise InvalidArgument("the name 'cli' is reserved for messages from the command line")
    return name


def unique_name(actors: Iterable[Any], wanted: str, exclude: str | None, strict: bool, max_chars: int) -> str:
    """``wanted`` if no live peer holds it (nor any peer as its id).

    Otherwise, when ``strict`` (a name the user chose), NameTaken naming the holder; else
    the first free ``wanted-2``, ``wanted-3``...
    """
    actors = list(actors)
    if strict:
        check_name(wanted, max_chars)
    taken = {a.name for a in actors if a.state != GONE and a.id != exclude} | {a.id for a in actors if a.id != exclude}
    if wanted not in taken:
        return wanted
    if strict:
        holder = next((a for a in actors if a.id != exclude and wanted in (a.name, a.id)), None)
        raise NameTaken(f"the name {wanted!r} is taken by peer {holder.id if holder else '?'}")
    base = wanted[: max_chars - 4]
    index = 2
    while f"{base}-{index}" in taken:
        index += 1
    return f"{base}-{index}"


def default_name(git_root: str | None, cwd: str) -> str:
    """A name from the repository's (else the directory's) base name, made valid."""
    base = os.path.basename((git_root or cwd).rstrip("/")) or "peer"
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._") or "peer"
    return cleaned[:40]
