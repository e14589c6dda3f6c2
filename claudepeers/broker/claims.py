"""Claims on files: a peer leases paths or globs of its repository for a while.

Advisory (nothing blocks the file system): a claim tells the other agents, and the
optional pre-commit guard, that someone is working there. A claim names paths relative
to the holder's repository top level (see :mod:`pathglob` for the patterns and the exact
overlap rule); claims of one repository (worktrees included: the common git dir) must
not overlap between different live peers, so a claim that would is refused and the
answer names the holder, its pattern, a path both cover and the holder's reason. A peer
may overlap its own claims; claiming the same pattern again renews it.

A claim ends when released, when its lease expires (by the broker's clock: a timer at the
earliest expiry, and every read filters by the time, so a ``Clock`` in tests decides), or
when its holder is gone. Claims are reserved in memory before they are stored, so two
claims racing for the same paths cannot both be granted. Logic layer: no AMP, no SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger

from claudepeers.broker import pathglob
from claudepeers.broker.records import iso
from claudepeers.common.errors import ClaimConflict, InvalidArgument, LimitExceeded

#: A lease's length when the caller names none.
DEFAULT_TTL_SECONDS = 3600.0
#: Patterns in one claim_paths call, and claims one peer may hold.
MAX_PATTERNS_PER_CALL = 64
MAX_CLAIMS_PER_PEER = 256
MAX_REASON_BYTES = 1024
#: Staged paths one guard check may ask about.
MAX_CHECKED_PATHS = 10_000


@dataclass(frozen=True)
class PathClaim:
    """One pattern leased by one peer in one repository until ``expires_at``."""

    peer_id: str
    repo: str
    pattern: str
    reason: str
    claimed_at: float
    expires_at: float

    def to_wire(self, holder_name: str, now: float) -> dict[str, Any]:
        """The JSON form for clients."""
        return {"peer_id": self.peer_id, "peer_name": holder_name, "repo": self.repo, "pattern": self.pattern,
                "reason": self.reason, "claimed_at": iso(self.claimed_at), "expires_at": iso(self.expires_at),
                "expires_in_seconds": round(max(0.0, self.expires_at - now), 1)}


class Claims:
    """Every live claim, by holder; mirrored in the store's ``claims`` table."""

    log = Logger()

    def __init__(self, store: Any, clock: Any, max_ttl: float, name_of: Callable[[str], str],
                 emit: Callable[..., Any]) -> None:
        self._store = store
        self._clock = clock
        self._max_ttl = max_ttl
        self._name_of = name_of
        self._emit = emit
        self._held: dict[str, dict[str, PathClaim]] = {}
        self._timer: Any = None

    # --- reading --------------------------------------------------------------------------

    def load(self, rows: Iterable[tuple], live: set[str]) -> None:
        """Take stored claims of live peers that have not expired (the rest is purged at once)."""
        now = self._clock.seconds()
        expired: dict[str, list[str]] = {}
        for row in rows:
            claim = PathClaim(*row)
            if claim.peer_id in live and claim.expires_at > now:
                self._held.setdefault(claim.peer_id, {})[claim.pattern] = claim
            elif claim.peer_id in live:
                expired.setdefault(claim.peer_id, []).append(claim.pattern)
        self._store.delete_claims_except(list(live)).addErrback(self._logged, "purging ended peers' claims")
        for peer_id, patterns in expired.items():
            self._store.delete_claims(peer_id, patterns).addErrback(self._logged, "purging expired claims")
        self._schedule()

    def live(self, repo: str | None = None, peer_id: str | None = None) -> list[PathClaim]:
        """Unexpired claims (of one repository, of one peer), oldest first."""
        now = self._clock.seconds()
        holders = [self._held.get(peer_id, {})] if peer_id is not None else list(self._held.values())
        found = [claim for claims in holders for claim in claims.values()
                 if claim.expires_at > now and (repo is None or claim.repo == repo)]
        return sorted(found, key=lambda c: (c.claimed_at, c.peer_id, c.pattern))

    def wire(self, claims: Iterable[PathClaim]) -> list[dict[str, Any]]:
        """Claims in their JSON form."""
        now = self._clock.seconds()
        return [claim.to_wire(self._name_of(claim.peer_id), now) for claim in claims]

    # --- claiming and releasing ---------------------------------------------------------------

    def claim(self, peer_id: str, record: Any, patterns: list[str], reason: str, ttl: float | None) -> Deferred:
        """Lease ``patterns`` for ``ttl`` seconds; fires with the new claims once stored.

        Refused whole (ClaimConflict) when any overlaps a live claim of another peer.
        """
        return maybeDeferred(self._claim, peer_id, record, patterns, reason, ttl)

    def _claim(self, peer_id: str, record: Any, patterns: list[str], reason: str, ttl: float | None) -> Deferred:
        repo, root = record.git_common_dir, record.git_root
        if not repo or not root:
            raise InvalidArgument(f"claim_paths needs a git repository; {record.cwd} is not in one")
        ttl = DEFAULT_TTL_SECONDS if ttl is None else float(ttl)
        if not 1.0 <= ttl <= self._max_ttl:
            raise InvalidArgument(f"ttl_seconds must be from 1 to {self._max_ttl:g} (max_claim_seconds, "
                                  f"CLAUDE_PEERS_MAX_CLAIM_SECONDS), not {ttl:g}")
        if not isinstance(reason, str) or len(reason.encode("utf-8")) > MAX_REASON_BYTES:
            raise LimitExceeded(f"the reason is longer than {MAX_REASON_BYTES} bytes")
        reason = " ".join("".join(c if c.isprintable() else " " for c in reason).split())
        if not patterns or len(patterns) > MAX_PATTERNS_PER_CALL:
            raise InvalidArgument(f"give 1 to {MAX_PATTERNS_PER_CALL} paths or globs")
        try:
            wanted = list(dict.fromkeys(pathglob.normalize(p, root) for p in patterns))
        except pathglob.PatternError as error:
            raise InvalidArgument(str(error)) from None
        mine = self._held.get(peer_id, {})
        now = self._clock.seconds()
        if len({*mine, *wanted}) > MAX_CLAIMS_PER_PEER:
            raise LimitExceeded(f"a peer may hold at most {MAX_CLAIMS_PER_PEER} claims; release some first")
        clashes = []
        for other in self.live(repo):
            if other.peer_id == peer_id:
                continue
            for pattern in wanted:
                witness = pathglob.overlap(pattern, other.pattern)
                if witness is not None:
                    clashes.append(f"{pattern} overlaps {other.pattern} (both cover {witness}), claimed by "
                                   f"{self._name_of(other.peer_id)} ({other.peer_id}) until {iso(other.expires_at)}: "
                                   f"{other.reason or '(no reason given)'}")
        if clashes:
            raise ClaimConflict("claim refused, nothing was claimed: " + "; ".join(clashes[:10])
                                + (f"; and {len(clashes) - 10} more" if len(clashes) > 10 else ""))
        new = [PathClaim(peer_id, repo, pattern, reason, now, now + ttl) for pattern in wanted]
        before = {claim.pattern: mine.get(claim.pattern) for claim in new}
        held = self._held.setdefault(peer_id, {})
        for claim in new:  # reserved now: a racing claim of another peer sees them
            held[claim.pattern] = claim
        self._schedule()

        def stored(_: Any) -> list[PathClaim]:
            self._emit("claim", peer_id, f"{self._name_of(peer_id)} claimed {', '.join(wanted)} for {ttl:g} s"
                       + (f": {reason}" if reason else ""))
            return new

        def failed(failure: Any) -> Any:
            for pattern, old in before.items():
                if held.get(pattern) in new:
                    if old is None:
                        held.pop(pattern, None)
                    else:
                        held[pattern] = old
            return failure

        return self._store.save_claims(new).addCallbacks(stored, failed)

    def release(self, peer_id: str, record: Any, patterns: list[str] | None) -> Deferred:
        """End the peer's claims on ``patterns`` (None: all); fires with (released, not held)."""
        return maybeDeferred(self._release, peer_id, record, patterns)

    def _release(self, peer_id: str, record: Any, patterns: list[str] | None) -> Deferred:
        held = self._held.get(peer_id, {})
        if patterns is None:
            wanted = list(held)
        else:
            if len(patterns) > MAX_CLAIMS_PER_PEER:
                raise InvalidArgument(f"give at most {MAX_CLAIMS_PER_PEER} paths to release")
            try:
                wanted = list(dict.fromkeys(pathglob.normalize(p, record.git_root) for p in patterns))
            except pathglob.PatternError as error:
                raise InvalidArgument(str(error)) from None
        released = [p for p in wanted if p in held]
        unknown = [p for p in wanted if p not in held]
        for pattern in released:
            del held[pattern]
        if not held:
            self._held.pop(peer_id, None)
        if not released:
            return succeed((released, unknown))
        self._emit("release", peer_id, f"{self._name_of(peer_id)} released {', '.join(released)}")
        return self._store.delete_claims(peer_id, released).addCallback(lambda _: (released, unknown))

    def peer_gone(self, peer_id: str) -> None:
        """The holder has ended: its claims end with it."""
        if self._held.pop(peer_id, None):
            self._store.delete_claims(peer_id, None).addErrback(self._logged, "deleting an ended peer's claims")

    # --- the guard ---------------------------------------------------------------------------------

    def conflicts(self, repo: str, paths: list[str], exclude: str | None) -> list[dict[str, Any]]:
        """Which of ``paths`` (literal, relative to the top level) live claims of peers other
        than ``exclude`` cover: one entry per path and claim."""
        if len(paths) > MAX_CHECKED_PATHS:
            raise LimitExceeded(f"at most {MAX_CHECKED_PATHS} paths per check")
        claims = [c for c in self.live(repo) if c.peer_id != exclude]
        found = []
        for path in paths:
            literal = "/".join(part for part in str(path).split("/") if part not in ("", "."))
            for claim in claims:
                if pathglob.covers(claim.pattern, literal):
                    found.append({"path": literal, **claim.to_wire(self._name_of(claim.peer_id), self._clock.seconds())})
        return found

    # --- expiry ---------------------------------------------------------------------------------------

    def _schedule(self) -> None:
        """One timer, at the earliest expiry."""
        ends = [claim.expires_at for claims in self._held.values() for claim in claims.values()]
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if ends:
            self._timer = self._clock.callLater(max(0.0, min(ends) - self._clock.seconds()), self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = self._clock.seconds()
        for peer_id in list(self._held):
            held = self._held[peer_id]
            ended = [pattern for pattern, claim in held.items() if claim.expires_at <= now]
            for pattern in ended:
                del held[pattern]
            if not held:
                del self._held[peer_id]
            if ended:
                self._emit("claim", peer_id, f"{self._name_of(peer_id)}'s claim on {', '.join(ended)} expired")
                self._store.delete_claims(peer_id, ended).addErrback(self._logged, "deleting expired claims")
        self._schedule()

    def stop(self) -> None:
        """Cancel the expiry timer (the broker stops)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _logged(self, failure: Any, what: str) -> None:
        if not getattr(failure.value, "reported", False):
            self.log.failure("{what} failed", failure, what=what)
