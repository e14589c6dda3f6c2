"""Value types shared by the storage layer and the actors: peers, messages, events.

Frozen dataclasses: an actor replaces its record (``dataclasses.replace``) rather than
mutating it, so a record handed to the store can never change under it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

ONLINE = "online"
OFFLINE = "offline"
GONE = "gone"

CLI_ID = "cli"


def iso(when: float | None) -> str | None:
    """Seconds since the epoch as an ISO 8601 UTC string with milliseconds (None stays None)."""
    if when is None:
        return None
    # Every pushed message carries one; the date and time of day are formatted once per
    # second and reused (datetime's own formatting costs several microseconds).
    global _last_second
    fraction, whole = math.modf(when)  # as datetime does, so that both round alike
    second, micro = int(whole), round(fraction * 1_000_000)
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    elif micro < 0:
        second, micro = second - 1, micro + 1_000_000
    if _last_second[0] != second:
        _last_second = (second, datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_last_second[1]}.{micro // 1000:03d}Z"


_last_second: tuple[int, str] = (-1, "")


@dataclass(frozen=True)
class PeerRecord:
    """One agent session as stored: its identity, where it works, and its state."""

    id: str
    host: str
    agent_pid: int
    agent_start: float
    client_type: str
    name: str
    cwd: str
    git_root: str | None
    git_common_dir: str | None
    branch: str | None
    tty: str | None
    summary: str
    state: str
    registered_at: float
    last_seen: float
    gone_at: float | None = None
    #: The agent's thread when one agent process runs several sessions (interactive Codex).
    thread_id: str | None = None
    #: The repository's identity across hosts ("<root commit> <remote URL>"; see gitinfo).
    repo_id: str | None = None

    def to_wire(self, unread: int = 0) -> dict[str, Any]:
        """The JSON form sent to clients (times as ISO strings)."""
        data = asdict(self)
        data["registered_at"] = iso(self.registered_at)
        data["last_seen"] = iso(self.last_seen)
        data["gone_at"] = iso(self.gone_at)
        data["unread"] = unread
        del data["agent_start"]
        return data


class OfRecord:
    """The facts every holder of a :class:`PeerRecord` answers from it (a local actor, a
    peer of another host): its id, name and state."""

    record: PeerRecord

    @property
    def id(self) -> str:
        """The peer id (stable for the life of the agent session, unique across hosts)."""
        return self.record.id

    @property
    def name(self) -> str:
        """The peer's current name (unique among live peers)."""
        return self.record.name

    @property
    def state(self) -> str:
        """online, offline or gone (a remote peer's as its own broker last wrote it)."""
        return self.record.state


@dataclass(frozen=True)
class Message:
    """A committed message; ``id`` orders a recipient's inbox."""

    id: int
    from_id: str
    from_name: str
    from_summary: str
    from_cwd: str
    from_client: str
    verified: bool
    to_id: str
    body: str
    sent_at: float
    #: The message this one answers, and its thread (the id of the thread's first message;
    #: None for that first message, whose thread is its own id).
    reply_to: int | None = None
    thread_id: int | None = None
    #: The host whose broker accepted the message (None: stored before hosts existed).
    from_host: str | None = None
    acked_at: float | None = None

    def to_wire(self) -> dict[str, Any]:
        """The JSON form pushed to bridges and returned by FetchUnread (``thread_id`` always
        set: a first message's is its own id)."""
        # Built by hand: this runs for every push, and asdict deep-copies every field.
        return {
            "id": self.id, "from_id": self.from_id, "from_name": self.from_name,
            "from_summary": self.from_summary, "from_cwd": self.from_cwd, "from_client": self.from_client,
            "verified": self.verified, "to_id": self.to_id, "body": self.body,
            "sent_at": iso(self.sent_at), "acked_at": iso(self.acked_at),
            "reply_to": self.reply_to, "thread_id": self.thread_id or self.id,
            "from_host": self.from_host,
        }


@dataclass(frozen=True)
class NewMessage:
    """A message about to be stored (no id yet)."""

    from_id: str
    from_name: str
    from_summary: str
    from_cwd: str
    from_client: str
    verified: bool
    to_id: str
    body: str
    sent_at: float
    reply_to: int | None = None
    thread_id: int | None = None
    from_host: str | None = None


@dataclass(frozen=True)
class Credentials:
    """What the kernel says about a connection: SO_PEERCRED on UNIX, nothing on TCP."""

    transport: str  # "unix" or "tcp"
    pid: int | None = None
    uid: int | None = None
    #: The connecting process's start time, read at accept (None: not known, as in tests).
    start: float | None = None
    #: True when the connecting process had already ended at accept (its pid may be reused).
    ended: bool = False
    #: TCP: the client's end of the connection (host, port); a claim's agent must hold it.
    address: tuple[str, int] | None = None


@dataclass(frozen=True)
class Claim:
    """What a registering bridge says about its agent session."""

    agent_pid: int
    agent_start: float
    client_type: str
    cwd: str
    git_root: str | None = None
    git_common_dir: str | None = None
    branch: str | None = None
    tty: str | None = None
    name: str | None = None
    delivery: str = "push"
    thread_id: str | None = None
    #: Over TCP: the secret the peer's first registration received (to resume it).
    secret: str | None = None
    #: The repository's identity across hosts (gitinfo.RepoInfo.repo_id).
    repo_id: str | None = None
