"""The store's plumbing: reads and writes in adbapi's thread, writes group-committed.

Writes that arrive while a transaction is running are queued and committed together in
the next one (group commit), so durability costs one commit per batch rather than per
write; no write's Deferred fires before its transaction has committed. A batch that fails
is retried write by write, so only the bad write sees its error. A read waits behind the
writes queued before it (read your writes). The SQL itself is :class:`~.store.Store`'s.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from claudepeers.broker.storage.dialect import Dialect
from claudepeers.common import dsn as dsns


class StoreError(Exception):
    """A storage operation failed; the broker answers BrokerUnavailable.

    ``reported`` is True when the store's guard has already logged the cause (a full disk,
    a deleted file): callers then need no traceback of their own.
    """

    reported = False


def reported_error(text: str) -> StoreError:
    """A StoreError whose cause is already in the log."""
    error = StoreError(text)
    error.reported = True
    return error


class GroupCommit:
    """Queues writes and commits each batch in one transaction of ``pool``.

    A subclass sets ``dialect`` and may set ``_groups`` (a kind of write, recognised by its
    type, to a function running consecutive ones in fewer statements) and ``_runs_first``
    (a kind moved to the front of every batch).
    """

    log = Logger()
    dialect: Dialect
    #: The kind of write a batch runs before the others (None: the order they came in).
    _runs_first: type | None = None

    def __init__(self, pool: adbapi.ConnectionPool) -> None:
        self._pool = pool
        self._groups: dict[type, Callable[[Any, list[Any]], list[Any]]] = {}
        self._pending: list[tuple[Callable[[Any], Any], Deferred]] = []
        self._flushing = False
        self.batches = 0
        self.batched_writes = 0
        # close(): callers waiting for it while queued writes drain, then "closed" for good.
        self._closers: list[Deferred] | None = None
        self._closed = False
        #: The guard (guard.py) watching the file and its bounds, when one is attached.
        self.guard: Any = None

    @property
    def queued_writes(self) -> int:
        """Writes waiting for the next group commit (the dashboard's queue depth)."""
        return len(self._pending)

    def _sql(self, statement: str) -> str:
        """Translate ``?`` placeholders to the pool's parameter style (one place only)."""
        return self.dialect.sql(statement)

    def _read(self, fn: Callable[..., Any], *args: Any) -> Deferred:
        if self._closed:
            return fail(StoreError("the store is closed"))
        if self._flushing or self._pending:
            # Read your writes: a read must see every write queued before it. Run directly,
            # it would overtake writes still waiting for the next group commit (a reconnecting
            # bridge's backlog read would miss the acknowledgement of a message just shown,
            # and the message would be pushed again).
            return self._write(lambda cursor: fn(cursor, *args))
        return self._pool.runInteraction(fn, *args)

    def _write(self, fn: Callable[[Any], Any]) -> Deferred:
        """Queue ``fn(cursor)`` for the next group commit; fires with its result after COMMIT."""
        if self._closed:
            # A closed pool silently drops work: the Deferred would never fire.
            return fail(StoreError("the store is closed"))
        if self.guard is not None and self.guard.refusal is not None:
            return fail(reported_error(self.guard.refusal))
        done: Deferred = Deferred()
        self._pending.append((fn, done))
        if not self._flushing:
            self._flush()
        return done

    def _flush(self, checked: bool = False) -> None:
        batch, self._pending = self._pending, []
        # ``checked``: a commit's check just ran (the usual case under load); one stat per commit.
        if self.guard is not None and not checked and self.guard.check_file() is not None:
            # The file is gone or replaced: write nothing more into a file nobody will open.
            for _, done in batch:
                done.errback(reported_error(self.guard.refusal))
            return
        self._flushing = True
        self.batches += 1
        self.batched_writes += len(batch)
        d = self._pool.runInteraction(self._txn_batch, [fn for fn, _ in batch])
        d.addCallbacks(self._batch_done, self._batch_failed, callbackArgs=(batch,), errbackArgs=(batch,))

    def _txn_batch(self, cursor: Any, operations: list[Callable[[Any], Any]]) -> list[Any]:
        # Consecutive writes of one kind in ``_groups`` (new messages: most of a busy batch)
        # run as one call: the store makes multi-row INSERTs of them, one statement per run
        # instead of one or three each, and the thread gives up the GIL once per statement.
        first = self._runs_first
        if first is not None:
            order = sorted(range(len(operations)), key=lambda i: type(operations[i]) is not first)
            ran = self._txn_run(cursor, [operations[i] for i in order])
            results: list[Any] = [None] * len(operations)
            for position, index in enumerate(order):
                results[index] = ran[position]
            return results
        return self._txn_run(cursor, operations)

    def _txn_run(self, cursor: Any, operations: list[Callable[[Any], Any]]) -> list[Any]:
        results: list[Any] = []
        index, count = 0, len(operations)
        while index < count:
            kind = type(operations[index])
            group = self._groups.get(kind)
            if group is None:
                results.append(operations[index](cursor))
                index += 1
                continue
            end = index + 1
            while end < count and type(operations[end]) is kind:
                end += 1
            results += group(cursor, operations[index:end])
            index = end
        return results

    def _batch_done(self, results: list[Any], batch: list[tuple[Any, Deferred]]) -> None:
        # Answer only writes whose commit went to the file still at the path.
        refusal = self.guard.committed() if self.guard is not None else None
        self._next(checked=True)
        if refusal is not None:
            for _, done in batch:
                done.errback(reported_error(refusal))
            return
        for (_, done), result in zip(batch, results):
            done.callback(result)

    def _batch_failed(self, failure: Failure, batch: list[tuple[Any, Deferred]]) -> None:
        # One bad write must not cost the others: the whole batch rolled back, so retry
        # each alone and let only the failing one see its error.
        reported = self.guard is not None and self.guard.write_failed(failure)
        if len(batch) == 1:
            self._next()
            batch[0][1].errback(self._as_store_error(failure, reported))
            return
        if not reported:
            self.log.warn("group commit of {n} writes failed ({err}); retrying one by one",
                      n=len(batch), err=failure.getErrorMessage())
        remaining = list(batch)

        def one_by_one(_: Any = None) -> None:
            if not remaining:
                self._next()
                return
            fn, done = remaining.pop(0)
            d = self._pool.runInteraction(lambda cursor: fn(cursor))
            d.addCallbacks(done.callback, lambda f: done.errback(self._as_store_error(f, reported)))
            d.addBoth(one_by_one)

        one_by_one()

    def _next(self, checked: bool = False) -> None:
        self._flushing = False
        if self._pending:
            self._flush(checked)

    def _as_store_error(self, failure: Failure, reported: bool = False) -> Failure:
        return as_store_error(failure, self.dialect, reported, getattr(self._pool, "dsn", None))

    def close(self) -> Deferred:
        """Wait for queued writes to commit, then close the pool; later reads and writes fail.

        Calling it again (during or after the first call) is harmless.
        """
        waiting: Deferred = Deferred()
        if self._closed:
            waiting.callback(None)
            return waiting
        if self._closers is not None:
            self._closers.append(waiting)
            return waiting
        self._closers = [waiting]

        def check() -> None:
            if self._flushing or self._pending:
                self._pool.runInteraction(lambda cursor: None).addBoth(lambda _: check())
            else:
                self._closed = True
                self._pool.close()
                closers, self._closers = self._closers or [], None
                for closer in closers:
                    closer.callback(None)

        check()
        return waiting


def as_store_error(failure: Failure, dialect: Dialect, reported: bool = False, dsn: str | None = None) -> Failure:
    """A driver's error as a StoreError (with any password of ``dsn`` masked); others unchanged."""
    if failure.check(*dialect.errors):
        text = f"database error: {failure.getErrorMessage() or failure.type.__name__}"
        if dsn:
            text = dsns.scrub(text, dsn)
        return Failure(reported_error(text) if reported else StoreError(text))
    return failure
