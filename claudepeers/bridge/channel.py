"""Whether Claude Code's channel works for this session, learnt from each push.

Claude Code says nothing in the handshake about whether it loaded us as a channel; it
drops channel notifications silently in many setups (gate off, ``-p``, ``--channels
server:...``, telemetry disabled, the 2026 protocol era). So a push is only a try: each
notification waits up to ``bound`` seconds for its confirmation (the agent's transcript,
:mod:`.transcript`). The channel's state follows the evidence::

    awaiting --a push confirmed--> confirmed            (stays: push mode for good)
    awaiting --a push not confirmed in time--> unconfirmed   (later mail goes inline)
    unconfirmed --a late confirmation--> confirmed

Pure logic with an injected clock; :class:`~claudepeers.bridge.session.Bridge` does the I/O.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred

#: The protocol versions of the classic (``initialize``) era, the only one with channels.
CLASSIC_ERA = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")

AWAITING = "awaiting"
CONFIRMED = "confirmed"
UNCONFIRMED = "unconfirmed"

#: How each state reads in a peer's delivery description (``list_peers``, ``status``, ``doctor``).
DESCRIPTIONS = {
    AWAITING: "channel (not confirmed yet)",
    CONFIRMED: "channel (confirmed)",
    UNCONFIRMED: "channel (unconfirmed, falling back to inline)",
}


class ChannelConfirmations:
    """Each channel push waits for its confirmation, at most ``bound`` seconds."""

    def __init__(
        self,
        clock: Any,
        bound: float,
        on_state: Callable[[str], None] = lambda state: None,
        first_bound: float | None = None,
        slow_start: Callable[[], bool] = lambda: False,
    ) -> None:
        self._clock = clock
        self._bound = bound
        # Claude Code 2.1.332 writes a session's first transcript line about 3 s after it
        # accepted the channel message that started the session's first turn. Giving up at
        # the usual bound then would hand the message to the inline paths (a rewake waiter
        # shows it again): so while no push was confirmed and the transcript does not exist
        # yet (``slow_start``), a push waits ``first_bound``.
        self._first_bound = bound if first_bound is None else max(bound, first_bound)
        self._slow_start = slow_start
        self._on_state = on_state
        self.state = AWAITING
        self._waits: dict[int, tuple[Deferred, Any]] = {}

    @property
    def pushing(self) -> bool:
        """True while new mail should be tried as a channel notification."""
        return self.state != UNCONFIRMED

    @property
    def description(self) -> str:
        """The state in a person's words."""
        return DESCRIPTIONS[self.state]

    @property
    def waiting(self) -> int:
        """How many pushes await their confirmation."""
        return len(self._waits)

    def wait_for(self, message_id: int, on_timeout: Callable[[int], None]) -> Deferred:
        """A push went out: fires True when confirmed, False when ``bound`` passed first
        (``on_timeout(message_id)`` runs just before). A second wait joins the first."""
        if message_id in self._waits:
            first = self._waits[message_id][0]
            joined: Deferred = Deferred()
            first.addBoth(lambda result: (joined.callback(result), result)[1])
            return joined
        done: Deferred = Deferred()
        bound = self._first_bound if self.state == AWAITING and self._slow_start() else self._bound
        timer = self._clock.callLater(bound, self._expired, message_id, on_timeout)
        self._waits[message_id] = (done, timer)
        return done

    def confirmed(self, message_id: int) -> bool:
        """Evidence for one push; True when a wait for it was answered."""
        self._set(CONFIRMED)
        wait = self._waits.pop(message_id, None)
        if wait is None:
            return False
        done, timer = wait
        if timer.active():
            timer.cancel()
        done.callback(True)
        return True

    def give_up(self, on_timeout: Callable[[int], None]) -> None:
        """No confirmation can come any more (the agent went to the 2026 era): every
        waiting push ends as if its time were up."""
        waits, self._waits = self._waits, {}
        for message_id, (done, timer) in waits.items():
            if timer.active():
                timer.cancel()
            on_timeout(message_id)
            done.callback(False)

    def _expired(self, message_id: int, on_timeout: Callable[[int], None]) -> None:
        wait = self._waits.pop(message_id, None)
        if wait is None:
            return
        if self.state == AWAITING:
            self._set(UNCONFIRMED)
        on_timeout(message_id)
        wait[0].callback(False)

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._on_state(state)


def describe(channel: ChannelConfirmations | None, delivery: str, era: str | None) -> str:
    """A peer's delivery description: how its agent gets mail now, and the MCP era it
    negotiated (``channel (confirmed); MCP 2025-11-25``, ``inline (MCP 2026-07-28: no
    channel path)``, ...)."""
    if era is not None and era not in CLASSIC_ERA:
        return f"inline (MCP {era}: no channel path)"
    if channel is not None:
        text = channel.description
    elif delivery == "push":
        text = "channel (forced by --delivery push; not confirmed)"
    else:
        text = "inline"
    return f"{text}; MCP {era}" if era else text
