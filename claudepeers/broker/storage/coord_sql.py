"""The SQL of groups and claims (schema v7): a mixin of :class:`~claudepeers.broker.storage.store.Store`
(it uses the store's ``_read``, ``_write`` and ``_sql``). Portable statements only: no
upserts, no ``RETURNING``; a claim renewed is deleted and inserted in one transaction."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred

CLAIM_COLUMNS = ("peer_id", "repo", "pattern", "reason", "claimed_at", "expires_at")


class CoordQueries:
    """Queries for groups and claims; every method returns a Deferred."""

    # Provided by Store.
    _read: Callable[..., Deferred]
    _write: Callable[[Callable[[Any], Any]], Deferred]
    _sql: Callable[[str], str]

    # --- groups ---------------------------------------------------------------------------

    def load_group_members(self) -> Deferred:
        """Every stored membership as (group_name, peer_id, joined_at)."""
        return self._read(self._txn_load_group_members)

    def _txn_load_group_members(self, cursor: Any) -> list[tuple[str, str, float]]:
        cursor.execute(self._sql("SELECT group_name, peer_id, joined_at FROM group_members ORDER BY joined_at"))
        return [tuple(row) for row in cursor.fetchall()]

    def add_group_member(self, group_name: str, peer_id: str, joined_at: float) -> Deferred:
        """Store one membership (a repeated one is left as it is)."""
        return self._write(lambda cursor: self._txn_add_group_member(cursor, group_name, peer_id, joined_at))

    def _txn_add_group_member(self, cursor: Any, group_name: str, peer_id: str, joined_at: float) -> None:
        cursor.execute(self._sql("DELETE FROM group_members WHERE group_name = ? AND peer_id = ?"), (group_name, peer_id))
        cursor.execute(self._sql("INSERT INTO group_members (group_name, peer_id, joined_at) VALUES (?, ?, ?)"),
                       (group_name, peer_id, joined_at))

    def remove_group_members(self, peer_id: str, group_names: Sequence[str] | None) -> Deferred:
        """Take a peer out of these groups (None: out of every group)."""
        return self._write(lambda cursor: self._txn_remove_group_members(cursor, peer_id, group_names))

    def _txn_remove_group_members(self, cursor: Any, peer_id: str, group_names: Sequence[str] | None) -> None:
        if group_names is None:
            cursor.execute(self._sql("DELETE FROM group_members WHERE peer_id = ?"), (peer_id,))
            return
        for name in group_names:
            cursor.execute(self._sql("DELETE FROM group_members WHERE peer_id = ? AND group_name = ?"), (peer_id, name))

    # --- claims ---------------------------------------------------------------------------

    def load_claims(self) -> Deferred:
        """Every stored claim as a tuple in CLAIM_COLUMNS order."""
        return self._read(self._txn_load_claims)

    def _txn_load_claims(self, cursor: Any) -> list[tuple]:
        cursor.execute(self._sql(f"SELECT {', '.join(CLAIM_COLUMNS)} FROM claims ORDER BY claimed_at"))
        return [tuple(row) for row in cursor.fetchall()]

    def save_claims(self, claims: Sequence[Any]) -> Deferred:
        """Store claims (PathClaim values), replacing the holder's claims on the same patterns."""
        rows = [tuple(getattr(claim, column) for column in CLAIM_COLUMNS) for claim in claims]
        return self._write(lambda cursor: self._txn_save_claims(cursor, rows))

    def _txn_save_claims(self, cursor: Any, rows: list[tuple]) -> None:
        marks = ", ".join("?" for _ in CLAIM_COLUMNS)
        for row in rows:
            cursor.execute(self._sql("DELETE FROM claims WHERE peer_id = ? AND pattern = ?"), (row[0], row[2]))
            cursor.execute(self._sql(f"INSERT INTO claims ({', '.join(CLAIM_COLUMNS)}) VALUES ({marks})"), row)

    def delete_claims(self, peer_id: str, patterns: Sequence[str] | None) -> Deferred:
        """End a peer's claims on these patterns (None: all of them)."""
        return self._write(lambda cursor: self._txn_delete_claims(cursor, peer_id, patterns))

    def _txn_delete_claims(self, cursor: Any, peer_id: str, patterns: Sequence[str] | None) -> None:
        if patterns is None:
            cursor.execute(self._sql("DELETE FROM claims WHERE peer_id = ?"), (peer_id,))
            return
        for pattern in patterns:
            cursor.execute(self._sql("DELETE FROM claims WHERE peer_id = ? AND pattern = ?"), (peer_id, pattern))

    def delete_claims_except(self, peer_ids: Sequence[str]) -> Deferred:
        """Forget every claim whose holder is not among ``peer_ids`` (ended or expired ones at start)."""
        keep = list(peer_ids)
        return self._write(lambda cursor: self._txn_delete_claims_except(cursor, keep))

    def _txn_delete_claims_except(self, cursor: Any, keep: list[str]) -> None:
        cursor.execute(self._sql("SELECT DISTINCT peer_id FROM claims"))
        for (peer_id,) in cursor.fetchall():
            if peer_id not in keep:
                cursor.execute(self._sql("DELETE FROM claims WHERE peer_id = ?"), (peer_id,))
