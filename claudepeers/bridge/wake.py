"""Waking an idle interactive Codex thread with ``codex queue`` (Codex >= 0.149).

A message held for a Codex thread waits for the agent's next tool call or the person's
next prompt. ``codex queue --thread ID --message TEXT`` starts a turn in that thread as if
the person had typed TEXT (behind a busy turn it waits for the turn's end). We queue a
short notice, never the messages: the turn it starts shows them through the prompt hook
(``claude-peers hook UserPromptSubmit``) or the agent's ``check_messages`` call, and those
acknowledge them; the push is answered ``woke`` meanwhile.

Rules, per bridge (one thread):

- one queue per burst: messages that come while a queue runs, or while an earlier
  notice's turn has not shown its messages yet, ride along (answered woke, no new queue);
- never a queue for a message a queue already named; riders left unshown once the notice's
  messages were shown get one queue of their own;
- never when the person has left (``present()`` false) or ``codex`` fails: answered held.

Life of one message id here::

    held --wake--> batched --queue rc 0--> announced --shown--> (forgotten)
    held --wake (a notice pending)--> riding --shown--> (forgotten)
    riding --the notice's messages shown, it not--> batched
    batched --queue fails / person left--> held (answered False)
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import Logger

from claudepeers.common.render import clean_line

#: The push-answer flag of a message the agent was woken for (peers.WOKE on the broker).
WOKE = "woke"
#: The notice names at most this many senders and is at most this long.
NOTICE_SENDERS = 3
NOTICE_CHARS = 300

RunQueue = Callable[[str], Deferred]  # notice text -> Deferred firing with True on success


def notice(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text queued into the thread: how many messages, from whom, what to do (bounded)."""
    senders: list[str] = []
    for message in messages:
        sender = f"{clean_line(message.get('from_name'), 40)} ({clean_line(message.get('from_id'), 16)})"
        if sender not in senders:
            senders.append(sender)
    named = ", ".join(senders[:NOTICE_SENDERS])
    if len(senders) > NOTICE_SENDERS:
        named += f" and {len(senders) - NOTICE_SENDERS} more"
    count = len(messages)
    head = f"[claude-peers] {count} new peer message{'s' if count != 1 else ''} from "
    tail = ": call the claude-peers check_messages tool to read them."
    room = NOTICE_CHARS - len(head) - len(tail)
    if len(named) > room:
        named = named[: room - 1] + "\u2026"
    return head + named + tail


def codex_queue(reactor: Any, binary: str, env: dict[str, str], thread_id: str, log: Logger) -> RunQueue:
    """A RunQueue that runs ``codex queue`` as a child process (the reactor never waits)."""

    def run(text: str) -> Deferred:
        d = getProcessOutputAndValue(binary, ["queue", "--thread", thread_id, "--message", text],
                                     env=env, path=env.get("HOME"), reactor=reactor)

        def done(result: tuple[bytes, bytes, int]) -> bool:
            out, err, code = result
            if code != 0:
                log.warn("codex queue for thread {thread} failed (exit {code}): {err}", thread=thread_id,
                         code=code, err=(err or out).decode(errors="replace").strip()[-300:])
            return code == 0

        def failed(failure: Any) -> bool:
            log.warn("codex queue could not run: {error}", error=failure.getErrorMessage())
            return False

        return d.addCallbacks(done, failed)

    return run


class Waker:
    """Queues one notice per burst of held messages into one Codex thread."""

    log = Logger()

    def __init__(self, reactor: Any, run_queue: RunQueue, present: Callable[[], bool]) -> None:
        self._reactor = reactor
        self._run_queue = run_queue
        self._present = present
        self._batch: list[tuple[Mapping[str, Any], Deferred | None]] = []
        self._running = False
        self._scheduled = False
        self._announced: set[int] = set()  # named by a queued notice, not shown yet
        self._riding: dict[int, Mapping[str, Any]] = {}  # answered woke, named by no notice
        self.queued: list[list[int]] = []  # the ids of each notice queued (for status, tests)

    def wake(self, message: Mapping[str, Any]) -> Any:
        """A held message: WOKE (now or later) when the agent is woken for it, else False."""
        message_id = int(message["id"])
        if message_id in self._announced or message_id in self._riding:
            return WOKE
        if self._announced and not self._running:
            self._riding[message_id] = message  # the pending notice's turn shows it
            return WOKE
        d: Deferred = Deferred()
        self._batch.append((message, d))
        self._schedule()
        return d

    def shown(self, ids: Iterable[int]) -> None:
        """These messages were shown; riders the notice's turn left behind get their own."""
        for message_id in ids:
            self._announced.discard(message_id)
            self._riding.pop(message_id, None)
        if self._riding and not self._announced and not self._running:
            self._batch.extend((message, None) for message in self._riding.values())
            self._riding.clear()
            self._schedule()

    def _schedule(self) -> None:
        """Queue at the end of this reactor turn: a Deliver's messages go in one notice."""
        if not self._scheduled and not self._running:
            self._scheduled = True
            self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._batch = self._batch, []
        if not batch:
            return
        if not self._present():
            self.log.info("not waking thread: no Codex TUI that showed it is running any more")
            self._answer(batch, False)
            return
        self._running = True
        d = self._run_queue(notice([message for message, _ in batch]))
        d.addErrback(lambda failure: False)
        d.addCallback(self._queued, batch)

    def _queued(self, ok: bool, batch: list[tuple[Mapping[str, Any], Deferred | None]]) -> None:
        self._running = False
        if ok:
            ids = [int(message["id"]) for message, _ in batch]
            self._announced.update(ids)
            self.queued.append(ids)
            # What came while the queue ran rides along with this notice.
            for message, d in self._batch:
                self._riding[int(message["id"])] = message
                if d is not None:
                    d.callback(WOKE)
            self._batch = []
        self._answer(batch, WOKE if ok else False)
        if self._batch:
            self._schedule()

    @staticmethod
    def _answer(batch: list[tuple[Mapping[str, Any], Deferred | None]], flag: Any) -> None:
        for _, d in batch:
            if d is not None:
                d.callback(flag)
