"""Watching the database while the broker runs: its file, its size, and its failures.

- The file: the device and inode of the path, taken at start, are compared on a timer and
  after every group commit, before any write of it is answered. A file deleted or replaced
  under the broker means commits go to a file nobody will open again: from then on every
  write is refused (BrokerUnavailable, naming the reason), a copy of what the broker still
  holds is rescued beside the path, and ``status``/``doctor`` say why.
- The size: a bound on the database (``max_db_bytes``) and per-peer quotas on stored bytes
  of unread mail (per recipient and per sender); past them a send gets LimitExceeded.
  Read mail is purged oldest first when the database nears its bound; unread mail never.
- The failures: a failing write (a full disk) is one clear log line per episode and one
  when writes succeed again, not a traceback per write.

On PostgreSQL (``path`` None) there is no file of ours: the identity checks and the rescue
are skipped, and so is the database bound (the server's disk is its own; deleted rows do not
shrink ``pg_database_size`` until VACUUM, so a bound on it could never be met again by
purging). The per-peer quotas and the failure episodes work alike on both engines; status
shows the database's size with no bound (see dialect.py).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.application.internet import TimerService
from twisted.logger import Logger
from twisted.python.failure import Failure

from claudepeers.broker.storage.dialect import SQLITE

#: Per message, what a row costs beyond its body (ids, names, cwd, index entries): an estimate
#: that keeps the bound honest between two measurements of the file.
ROW_OVERHEAD = 200
#: Purge read mail when the database passes this share of its bound, down to the second.
HIGH_WATER, LOW_WATER = 0.9, 0.8


class Guard:
    """The store's watchman; the store asks it before answering writes (see module doc)."""

    log = Logger()

    def __init__(self, store: Any, path: Path | None, limits: Any, clock: Any, problems: list[str] | None = None) -> None:
        self._store = store
        #: The database file, or None for a server (PostgreSQL): no file checks, no bound.
        self._path = Path(path) if path is not None else None
        self._limits = limits
        self._clock = clock
        #: Found at start (a damaged WAL, a failed integrity check): shown until a restart.
        self.problems: list[str] = list(problems or [])
        #: Why every write is refused (the file is gone or replaced), or None.
        self.refusal: str | None = None
        if self._path is not None:
            info = os.stat(self._path)
            self._identity = (info.st_dev, info.st_ino)
        self.unread_to: defaultdict[str, int] = defaultdict(int)
        self.unread_from: defaultdict[str, int] = defaultdict(int)
        self.used_bytes = 0
        self._added = 0  # estimated bytes stored since the last measurement
        self._high_water = int(limits.max_db_bytes * HIGH_WATER)
        self.purged_for_bound = 0
        #: The purge of read mail under way (fires when done and measured), or None.
        self.purging: Deferred | None = None
        self._episode: dict[str, Any] | None = None
        #: The periodic check (every db_check_seconds): a service the broker's service
        #: composes; :meth:`start` runs it alone for in-process use.
        self.timer = TimerService(limits.db_check_seconds, self.tick)
        self.timer.clock = clock
        self._own_timer = False
        store.guard = self

    # --- life -----------------------------------------------------------------------------------

    def start(self, timer: bool = True) -> Deferred:
        """Count stored unread bytes, measure the file, start the timer; fires when counted.

        ``timer=False``: the caller composes :attr:`timer` into its service tree instead.
        """
        d = self.recount()
        d.addCallback(lambda _: self._measure())
        if timer:
            d.addCallback(self._start_timer)
        return d

    def _start_timer(self, _: Any = None) -> None:
        self._own_timer = True
        self.timer.startService()

    def stop(self) -> None:
        """Stop the timer it started itself (the service stops the one it composed)."""
        if self._own_timer and self.timer.running:
            self.timer.stopService()

    def recount(self) -> Deferred:
        """Reload the unread byte counts from the database (at start, after purging peers)."""
        d = self._store.unread_bytes()

        def counted(sums: tuple[dict[str, int], dict[str, int]]) -> None:
            self.unread_to = defaultdict(int, sums[0])
            self.unread_from = defaultdict(int, sums[1])

        return d.addCallback(counted)

    def tick(self) -> Deferred:
        """Periodic: is the file still ours; how big is it; purge read mail near the bound."""
        if self.check_file() is not None or self._added == 0:
            # Nothing stored since the last measurement: the size can only have shrunk, and
            # an idle broker costs one stat a second.
            return succeed(None)
        return self._measure().addErrback(self._periodic_failed)

    def _periodic_failed(self, failure: Failure) -> None:
        if not self.write_failed(failure):
            self.log.failure("checking the database failed", failure)

    # --- the file -------------------------------------------------------------------------------

    def check_file(self) -> str | None:
        """Compare the path's device and inode with the file opened at start; the refusal."""
        if self.refusal is not None or self._path is None:
            return self.refusal
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            self._broken(f"the database file {self._path} was deleted while the broker ran")
        except OSError as exc:
            self._broken(f"the database file {self._path} cannot be checked: {exc.strerror}")
        else:
            if (info.st_dev, info.st_ino) != self._identity:
                self._broken(f"the database file {self._path} was replaced by another file while the broker ran")
        return self.refusal

    def _broken(self, reason: str) -> None:
        self.refusal = f"{reason}; sends are refused until the broker is restarted"
        self.log.critical("{refusal}", refusal=self.refusal)
        self.problems.append(self.refusal)
        self._rescue()

    def _rescue(self) -> None:
        """Copy what the broker's connection still sees (the old file) beside the path."""
        stamp = int(self._clock.seconds())
        target = self._path.with_name(f"{self._path.name}.rescued-{stamp}")
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as exc:
            self._rescued(f"no copy of the old database could be made ({exc.strerror})")
            return
        d = self._store.backup_to(str(target))
        # Then fold the WAL into the old file and empty it: the -wal left at the path must not
        # be applied by SQLite to whatever file now has (or later gets) the database's name.
        d.addCallback(lambda _: self._store.truncate_wal())
        d.addCallbacks(
            lambda _: self._rescued(f"what it held is rescued in {target}: stop the broker, check that "
                                    f"copy and move it to {self._path} before restarting"),
            lambda f: self._rescued(f"rescuing it to {target} failed: {f.getErrorMessage()}"),
        )

    def _rescued(self, text: str) -> None:
        self.log.critical("database rescue: {text}", text=text)
        self.problems.append(text)

    # --- commits and failures -------------------------------------------------------------------

    def committed(self) -> str | None:
        """After a commit, before its writes are answered: the refusal if the file changed."""
        refusal = self.check_file()
        if refusal is None and self._episode is not None:
            episode, self._episode = self._episode, None
            self.log.warn(
                "database writes succeed again after {failures} failed write(s) in {seconds:.1f} s",
                failures=episode["failures"], seconds=self._clock.seconds() - episode["since"],
            )
        return refusal

    def write_failed(self, failure: Failure) -> bool:
        """A write failed: log its cause once per episode; True when it needs no other log line."""
        if not failure.check(*getattr(self._store, "dialect", SQLITE).errors):
            return False
        cause = failure.getErrorMessage()
        episode = self._episode
        if episode is None:
            episode = self._episode = {"since": self._clock.seconds(), "failures": 0, "causes": set()}
        episode["failures"] += 1
        if cause not in episode["causes"]:
            episode["causes"].add(cause)
            self.log.error(
                "database writes are failing: {cause} (one line per cause until writes succeed again)",
                cause=cause,
            )
        return True

    # --- size and quotas ------------------------------------------------------------------------

    def room_for(self, sender_id: str, recipient_id: str, recipient_name: str, size: int) -> str | None:
        """Why a send of ``size`` body bytes exceeds a bound, or None (the send may go on)."""
        limits = self._limits
        held = self.unread_to.get(recipient_id, 0)
        if held + size > limits.max_unread_bytes:
            return (f"{recipient_name} already holds {held} bytes of unread mail; the limit is "
                    f"{limits.max_unread_bytes} (max_unread_bytes, CLAUDE_PEERS_MAX_UNREAD_BYTES)")
        sent = self.unread_from.get(sender_id, 0)
        if sent + size > limits.max_sender_unread_bytes:
            return (f"{sender_id} has {sent} bytes of mail not yet read by its recipients; the limit is "
                    f"{limits.max_sender_unread_bytes} (max_sender_unread_bytes, CLAUDE_PEERS_MAX_SENDER_UNREAD_BYTES)")
        used = self.used_bytes + self._added
        if self._path is not None and used + size + ROW_OVERHEAD > limits.max_db_bytes:
            self._purge()
            return (f"the database holds about {used} bytes; the limit is {limits.max_db_bytes} "
                    "(max_db_bytes, CLAUDE_PEERS_MAX_DB_BYTES); read mail is purged to make room, "
                    "unread mail is kept until it is read")
        return None

    def stored(self, from_id: str, to_id: str, size: int) -> None:
        """A new message of ``size`` body bytes was committed."""
        self.unread_to[to_id] += size
        self.unread_from[from_id] += size
        self._added += size + ROW_OVERHEAD
        if self._path is not None and self.used_bytes + self._added > self._high_water:
            self._purge()  # make room before sends have to be refused, not only on the timer

    def acked(self, to_id: str, rows: list[tuple[int, str, int]]) -> None:
        """Messages (id, from_id, size) of ``to_id`` were read: their bytes leave the quotas."""
        unread_from, total = self.unread_from, 0
        for _id, from_id, size in rows:
            unread_from[from_id] -= size
            total += size
            if unread_from[from_id] < 0:  # never below nothing, whatever was miscounted
                unread_from[from_id] = 0
        self.unread_to[to_id] = max(0, self.unread_to[to_id] - total)

    def _measure(self) -> Deferred:
        def measured(used: int) -> None:
            self.used_bytes, self._added = used, 0
            if self._path is not None and used > self._high_water:
                self._purge()

        return self._store.used_bytes().addCallback(measured)

    def _purge(self) -> None:
        """Delete read mail, oldest first, until the database is back under its low water."""
        if self.purging is not None or self.refusal is not None:
            return
        wanted = int(self.used_bytes + self._added - self._limits.max_db_bytes * LOW_WATER)
        if wanted <= 0:
            return

        def purged(result: tuple[int, int, int]) -> Deferred:
            count, freed, events = result
            self.purged_for_bound += count
            self.log.info("database near its bound: purged {count} read messages and {events} old events "
                          "({freed} bytes), oldest first", count=count, events=events, freed=freed)
            # The WAL is counted too: give back what it holds, then measure.
            return self._store.shrink_wal().addCallback(lambda _: self._store.used_bytes())

        def measured(used: int) -> None:
            self.used_bytes, self._added = used, 0

        def finished(_: Any) -> None:
            self.purging = None

        d = self._store.purge_read(wanted)
        d.addCallback(purged)
        d.addCallback(measured)
        d.addErrback(self._periodic_failed)
        d.addBoth(finished)
        if d.called:  # a synchronous pool: finished already ran
            return
        self.purging = d

    def status(self) -> dict[str, Any]:
        """For ``status`` and ``doctor``: is the store healthy, and its size against the bound."""
        return {
            "ok": self.refusal is None and not self.problems and self._episode is None,
            "problems": list(self.problems),
            "writes_failing": sorted(self._episode["causes"]) if self._episode else [],
            "used_bytes": self.used_bytes + self._added,
            "max_db_bytes": self._limits.max_db_bytes if self._path is not None else None,
            "purged_for_bound": self.purged_for_bound,
        }
