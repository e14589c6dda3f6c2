"""What a tool needs from the broker, how such a call fails, and what a tool answers.

The tool modules (:mod:`.tools`, :mod:`.tools_coord`, :mod:`.tools_threads`) and the
connection (:mod:`.connection`) share these and nothing else of each other's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class BrokerUnreachable(Exception):
    """The broker could not be reached (not running, restarting, or refused us)."""


class BrokerTimeout(BrokerUnreachable):
    """The broker did not answer a call within the call deadline (stopped, or overloaded)."""

    def __init__(self, seconds: float, detail: str = "") -> None:
        super().__init__(f"it did not answer within {seconds:g} s" + (f"; {detail}" if detail else ""))
        self.seconds = seconds


class BrokerCalls(Protocol):
    """What the tools need from the broker connection."""

    async def call(self, command: type, **arguments: Any) -> dict[str, Any]:
        """Call one AMP command; raise a ``wire`` error or :class:`BrokerUnreachable`."""


@dataclass(frozen=True)
class ToolResult:
    """Text for the agent, and whether it reports a failure."""

    text: str
    is_error: bool = False
