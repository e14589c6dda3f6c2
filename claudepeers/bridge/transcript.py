"""Evidence that Claude Code accepted a channel message: its session transcript.

Claude Code writes every channel notification it accepts into the session's transcript,
``<config>/projects/<cwd, every character but letters and digits as ->/<session id>.jsonl``:
at once a ``{"type":"queue-operation","operation":"enqueue","content":"<channel
source=\\"NAME\\" ... message_id=\\"N\\">..."}`` line, and when the message enters the
conversation a ``{"type":"user",...,"origin":{"kind":"channel","server":"NAME"}}`` line with
the same tag. A channel it skipped (gate off, ``-p``, ``--channels server:...``, telemetry
disabled, modern protocol era) writes nothing. Checked with 2.1.197 and 2.1.332, which both
keep ``<config>/sessions/<agent pid>.json`` (``sessionId``, ``cwd``) and pass
``CLAUDE_CODE_SESSION_ID`` to their MCP servers.

:class:`TranscriptWatch` watches the project folder with inotify (no polling), reads
only what was appended since it started, and calls ``on_seen(message_id)`` for each of our
channel messages it finds. Where inotify is missing it looks at file sizes every
``poll_seconds`` while someone waits for a confirmation.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.filepath import FilePath

#: A transcript line is read only when it may be ours (a cheap test before json.loads).
_CHANNEL_HINT = b"<channel source="
_TAG = re.compile(r'^<channel source="(?P<server>[^"]*)"(?P<attributes>[^>]*)>')
_MESSAGE_ID = re.compile(r'\smessage_id="(\d+)"')
#: The longest partial line kept while waiting for its end (a transcript line may be big).
MAX_PARTIAL = 8 << 20
#: How much of the end of a transcript a starting bridge reads for messages already shown.
HISTORY_BYTES = 16 << 20


def config_dir(environ: Mapping[str, str]) -> Path:
    """Claude Code's own folder: ``$CLAUDE_CONFIG_DIR`` or ``~/.claude``."""
    configured = environ.get("CLAUDE_CONFIG_DIR")
    if configured:
        return Path(configured)
    return Path(environ.get("HOME") or os.path.expanduser("~")) / ".claude"


def project_folder(config: Path, cwd: str) -> Path:
    """The folder of the transcripts of sessions started in ``cwd``."""
    return config / "projects" / re.sub(r"[^A-Za-z0-9]", "-", cwd)


def session_of(config: Path, agent_pid: int | None, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(session id, session cwd) from ``sessions/<pid>.json``, else the environment."""
    if agent_pid is not None:
        try:
            record = json.loads((config / "sessions" / f"{agent_pid}.json").read_text())
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and isinstance(record.get("sessionId"), str):
            cwd = record.get("cwd")
            return record["sessionId"], cwd if isinstance(cwd, str) else None
    return environ.get("CLAUDE_CODE_SESSION_ID") or None, environ.get("CLAUDE_PROJECT_DIR") or None


def channel_message_ids(line: bytes, server: str) -> list[int]:
    """The message ids of our channel messages in one transcript line (usually none)."""
    if _CHANNEL_HINT not in line:
        return []
    try:
        entry = json.loads(line)
    except ValueError:
        return []
    if not isinstance(entry, dict):
        return []
    if entry.get("type") == "queue-operation" and entry.get("operation") == "enqueue":
        texts = [entry.get("content")]
    else:
        origin = entry.get("origin")
        if not (isinstance(origin, dict) and origin.get("kind") == "channel" and origin.get("server") == server):
            return []
        content = (entry.get("message") or {}).get("content") if isinstance(entry.get("message"), dict) else None
        if isinstance(content, list):
            texts = [part.get("text") for part in content if isinstance(part, dict)]
        else:
            texts = [content]
    found = []
    for text in texts:
        if not isinstance(text, str):
            continue
        tag = _TAG.match(text)
        if tag is None or tag.group("server") != server:
            continue
        number = _MESSAGE_ID.search(tag.group("attributes"))
        if number is not None:
            found.append(int(number.group(1)))
    return found


class TranscriptWatch:
    """Finds our channel messages in the agent's session transcript as they are written."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        config: Path,
        cwd: str,
        agent_pid: int | None,
        server: str,
        on_seen: Callable[[int], None],
        environ: Mapping[str, str] | None = None,
        poll_seconds: float = 0.1,
        use_inotify: bool = True,
        on_history: Callable[[list[int]], None] = lambda ids: None,
    ) -> None:
        self._reactor = reactor
        self._config = config
        self._cwd = cwd
        self._agent_pid = agent_pid
        self._server = server
        self._on_seen = on_seen
        self._on_history = on_history
        self._environ = dict(os.environ if environ is None else environ)
        self._poll_seconds = poll_seconds
        self._use_inotify = use_inotify
        self._offsets: dict[str, int] = {}
        self._partial: dict[str, bytes] = {}
        self._notifier: Any = None
        self._watched: Path | None = None
        self._poller: LoopingCall | None = None
        self.session_id: str | None = None
        self.folder: Path | None = None

    def start(self) -> None:
        """Note where every transcript ends now (only later lines count), then watch.

        The session's own transcript is read first (its last ``HISTORY_BYTES``): the channel
        messages it already holds reach ``on_history``, so a restarted bridge does not show
        again what its predecessor pushed and the agent got."""
        session_id, session_cwd = session_of(self._config, self._agent_pid, self._environ)
        self.session_id = session_id
        self.folder = project_folder(self._config, session_cwd or self._cwd)
        if session_id is not None:
            seen = self._history(self.folder / f"{session_id}.jsonl")
            if seen:
                self._on_history(seen)
        for path in self._transcripts():
            self._offsets[str(path)] = _size(path)
        self._arm()

    def exists(self) -> bool:
        """True when this session's transcript exists (unknown session: any in the folder)."""
        return any(path.exists() for path in self._transcripts()) if self.folder is not None else False

    def _history(self, path: Path) -> list[int]:
        """Our message ids in the last ``HISTORY_BYTES`` of one transcript, in order."""
        try:
            with open(path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, size - HISTORY_BYTES))
                data = handle.read(HISTORY_BYTES)
        except OSError:
            return []
        lines = data.split(b"\n")
        if len(data) == HISTORY_BYTES:
            lines = lines[1:]  # the first may be cut
        return [message_id for line in lines for message_id in channel_message_ids(line, self._server)]

    def stop(self) -> None:
        """Stop watching."""
        if self._notifier is not None:
            self._notifier.loseConnection()
            self._notifier = None
        self.idle()

    @property
    def inotify(self) -> bool:
        """True when changes are announced by the kernel (no polling at all)."""
        return self._notifier is not None and self._watched == self.folder

    def waiting(self) -> None:
        """Someone waits for a confirmation: make sure we look (polling only without inotify)."""
        if self.inotify:
            return
        self._arm()
        if self._poller is None:
            self._poller = LoopingCall(self.scan)
            self._poller.clock = self._reactor
            self._poller.start(self._poll_seconds, now=True)

    def idle(self) -> None:
        """Nobody waits any more: stop the fallback polling."""
        if self._poller is not None:
            self._poller.stop()
            self._poller = None

    def scan(self) -> None:
        """Read what was appended to the transcripts since we last looked."""
        assert self.folder is not None
        if not self.inotify:
            self._arm()
            self._follow_session()
        for path in self._transcripts():
            self._read(path)

    # --- internals ----------------------------------------------------------------------

    def _transcripts(self) -> list[Path]:
        """Our session's transcript when we know the session, else every one in the folder."""
        assert self.folder is not None
        if self.session_id is not None:
            return [self.folder / f"{self.session_id}.jsonl"]
        try:
            return [self.folder / name for name in os.listdir(self.folder) if name.endswith(".jsonl")]
        except OSError:
            return []

    def _follow_session(self) -> None:
        """``/clear`` or ``/resume`` moves the agent to another session (and transcript)."""
        newest, _ = session_of(self._config, self._agent_pid, self._environ)
        if newest is not None and newest != self.session_id:
            self.session_id = newest

    def _arm(self) -> None:
        """Watch the project folder, or its nearest existing parent until it exists."""
        if not self._use_inotify or self.folder is None:
            return
        target = self.folder
        while not target.is_dir() and target != target.parent:
            target = target.parent
        if self._notifier is not None and self._watched == target:
            return
        try:
            from twisted.internet import inotify
        except ImportError:  # not Linux: the stat fallback serves
            self._use_inotify = False
            return
        if self._notifier is None:
            self._notifier = inotify.INotify(reactor=self._reactor)
            self._notifier.startReading()
        elif self._watched is not None:
            self._notifier.ignore(FilePath(str(self._watched)))
        mask = inotify.IN_MODIFY | inotify.IN_CREATE | inotify.IN_MOVED_TO | inotify.IN_CLOSE_WRITE
        self._notifier.watch(FilePath(str(target)), mask=mask, callbacks=[self._changed])
        self._watched = target

    def _changed(self, _watch: Any, path: FilePath, _mask: int) -> None:
        """inotify: something in the watched folder changed."""
        if self._watched != self.folder:
            self._arm()  # the project folder may exist now
            self.scan()
            return
        name = path.basename()
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if not name.endswith(".jsonl"):
            return
        if self.session_id is not None and name != f"{self.session_id}.jsonl":
            self._follow_session()
            if name != f"{self.session_id}.jsonl":
                return  # another session's transcript
        assert self.folder is not None
        self._read(self.folder / name)

    def _read(self, path: Path) -> None:
        """Parse complete new lines of one transcript."""
        key = str(path)
        offset = self._offsets.get(key, 0)
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except OSError:
            return
        if not data:
            return
        self._offsets[key] = offset + len(data)
        data = self._partial.pop(key, b"") + data
        lines = data.split(b"\n")
        if lines[-1] and len(lines[-1]) <= MAX_PARTIAL:
            self._partial[key] = lines[-1]
        for line in lines[:-1]:
            for message_id in channel_message_ids(line, self._server):
                self._on_seen(message_id)


def _size(path: Path) -> int:
    """The size of a file, 0 if it is gone."""
    try:
        return path.stat().st_size
    except OSError:
        return 0
