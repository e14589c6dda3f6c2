"""How the bridge shows pushed mail as channel notifications, and learns whether that works.

A mixin of :class:`~claudepeers.bridge.session.Bridge` (kept apart for size): each push of a
detected channel waits for the agent's transcript (:mod:`.transcript`) to show it, at most
the confirmation bound (:mod:`.channel`); what is not confirmed falls back to the inline
paths (the next tool result, ``check_messages``, a prompt hook), and a late confirmation of
a message still waiting counts, so it is never shown twice.
"""

from __future__ import annotations

from typing import Any, Mapping

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from claudepeers.bridge.channel import CONFIRMED, UNCONFIRMED, ChannelConfirmations
from claudepeers.bridge.server import channel_notification


class ChannelPushing:
    """The channel side of a bridge (its attributes are the Bridge's)."""

    log = Logger()
    channel: ChannelConfirmations | None
    transcript: Any
    inbox: Any
    writer: Any
    pipe: Any
    link: Any
    era: str | None
    delivery: str

    def _report_delivery(self) -> None:  # pragma: no cover - the Bridge's
        raise NotImplementedError

    def _acknowledge_when_shown(self, message_id: int, result: Any) -> None:
        """A message pushed outside a Deliver answer: acknowledge it once it counts as shown."""
        def acknowledge(shown: Any) -> Any:
            if shown:
                self.link.acknowledge([message_id])
            return shown

        if isinstance(result, Deferred):
            result.addCallback(acknowledge)
        else:
            acknowledge(result)

    def _push(self, message: Mapping[str, Any]) -> Any:
        """Send one message as a channel notification: shown, or a Deferred of whether it was."""
        if self.writer.broken:
            return False
        message_id = int(message["id"])
        if self.channel is None:  # forced push: the pipe is all the evidence there is
            self.pipe.write_line(channel_notification(message))
            self.inbox.mark_shown([message_id])
            return self._in_pipe(True)
        # Waiting before writing: the agent may answer before this function returns.
        self.inbox.pushed(message)
        confirmed = self.channel.wait_for(message_id, self._not_confirmed)
        self.pipe.write_line(channel_notification(message))
        if self.transcript is not None:
            self.transcript.waiting()
        return confirmed

    def _in_pipe(self, shown: bool) -> Any:
        """``shown`` now if the pipe took everything, else once it has."""
        if not shown or not self.writer.pending:
            return shown
        return self.writer.drained()

    def _seen(self, message_id: int) -> None:
        """The agent's transcript shows one of our channel messages."""
        if self.channel is None:
            return
        where = self.inbox.confirm(message_id)
        self.channel.confirmed(message_id)
        if where == "late":
            # It had fallen back to the inline paths and nothing showed it yet: it counts
            # as shown now, and is never shown again.
            self.link.acknowledge([message_id])
        elif where == "shown":
            self.log.warn("message {id} was confirmed by the channel after a tool result had shown it",
                          id=message_id)
        self._maybe_idle()

    def _seen_before(self, ids: list[int]) -> None:
        """The transcript already shows these (a bridge before us pushed them, and the agent
        got them; their acknowledgement may have been lost with that bridge): when the
        broker pushes them again they count as shown, and are not shown a second time."""
        if self.channel is not None and ids:
            self.inbox.mark_shown(ids)
            self.channel.confirmed(ids[-1])

    def _not_confirmed(self, message_id: int) -> None:
        """A push saw no confirmation in time: it waits for the next tool result or prompt."""
        self.inbox.fall_back(message_id)
        self.log.info("channel push of message {id} not confirmed; it waits for the inline paths", id=message_id)
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self.transcript is not None and self.channel is not None and not self.channel.waiting:
            self.transcript.idle()

    def _channel_state(self, state: str) -> None:
        """The channel was confirmed (push for good) or not (later mail goes inline)."""
        if state == UNCONFIRMED:
            self.inbox.mode = "inline"
        elif state == CONFIRMED:
            self.inbox.mode = "push"
        self.log.info("channel {state}", state=state)
        self._report_delivery()

    def _shown_elsewhere(self, ids: list[int]) -> None:
        """A prompt hook of our agent showed these: never show them here."""
        if self.channel is not None:
            for message_id in ids:
                if self.inbox.is_pending(int(message_id)):
                    # A prompt hook saw it in the prompt of the turn our channel started
                    # (the hook stays quiet while a channel is tried): channel evidence.
                    self.inbox.mark_shown([int(message_id)])
                    self.channel.confirmed(int(message_id))
        self.inbox.mark_shown(ids)

    def _modern_era(self, version: str) -> None:
        """The agent speaks the 2026 era: it has no channel path, so mail goes inline."""
        if self.era == version:
            return
        self.era = version
        self.inbox.mode = "inline"
        if self.channel is not None:
            channel, self.channel = self.channel, None
            channel.give_up(self.inbox.fall_back)
        if self.transcript is not None:
            self.transcript.stop()
            self.transcript = None
        self.inbox.mode = "inline"
        self.inbox.ready = True
        self.delivery = "inline"
        self._report_delivery()
