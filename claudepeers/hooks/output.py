"""What a hook prints: the agents' hook output for a batch of messages, and the stop guard's rule.

Pure functions, no I/O. Claude Code 2.1 and Codex 0.169 read the same JSON on a hook's
stdout (exit status 0):

- ``UserPromptSubmit`` and ``SessionStart``: ``{"hookSpecificOutput": {"hookEventName":
  <event>, "additionalContext": <text>}}`` puts the text into the model's context.
- ``Stop``: ``{"decision": "block", "reason": <text>}`` keeps the turn going, with the
  reason given to the model as what to do next. The input carries ``stop_hook_active``
  (true when the turn already continues because of a stop hook). Claude Code 2.1.332 gives
  such a reason to the model twice (as the "Stop hook feedback" reminder and again as a
  system message "Stop hook blocking error from command ..."), so under Claude Code the
  stop guard blocks the other documented way, exit status 2 with the reason on stderr,
  which both 2.1.197 and 2.1.332 show once (see :func:`blocks_by_exit_status`).

Messages are framed by :func:`claudepeers.common.render.render_message`, as the bridge frames them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from claudepeers.common.render import render_message

#: Events whose output adds context at the start of a session or turn.
CONTEXT_EVENTS = frozenset({"UserPromptSubmit", "SessionStart"})
#: The turn-end event of the stop guard.
STOP_EVENT = "Stop"
EVENTS = CONTEXT_EVENTS | {STOP_EVENT}
#: Bound on the text one hook adds. Claude Code keeps about 10,000 characters of
#: additionalContext whole and reduces longer text to a short preview.
MAX_CONTEXT_CHARS = 9_000
#: How often the stop guard may block within one turn when the agent does not say
#: ``stop_hook_active`` (a safety net; with the flag, it blocks at most once).
MAX_STOP_BLOCKS = 3

WHERE_ELSE = "call the claude-peers check_messages tool to read them"


@dataclass(frozen=True)
class Selection:
    """The messages that fit into one hook's output, and what is left waiting."""

    text: str  # empty when nothing is to be shown
    ids: list[int]  # the messages whose full text is in ``text``: acknowledge exactly these
    waiting: int  # messages left unshown (too long for this output, or beyond the page)


def select(messages: Sequence[Mapping[str, Any]], more: int, max_chars: int = MAX_CONTEXT_CHARS) -> Selection:
    """Frame the oldest messages that fit in ``max_chars``, in order; say how many still wait.

    A message that does not fit is left for the next hook or the bridge, and so is every
    message after it, so that a peer's messages are read in the order they were sent.
    """
    parts: list[str] = []
    ids: list[int] = []
    used = 0
    for message in messages:
        framed = render_message(message)
        if used + len(framed) + 2 > max_chars:
            break
        parts.append(framed)
        ids.append(int(message["id"]))
        used += len(framed) + 2
    waiting = len(messages) - len(ids) + max(0, int(more))
    if not ids and not waiting:
        return Selection("", [], 0)
    lines = []
    if ids:
        noun = "message" if len(ids) == 1 else "messages"
        lines.append(
            f"[claude-peers: {len(ids)} new {noun} from other agent sessions on this machine; "
            "each is shown to you once]"
        )
        lines.extend(parts)
    if waiting:
        noun = "message" if waiting == 1 else "messages"
        more = "more " if ids else ""
        lines.append(f"[{waiting} {more}claude-peers {noun} waiting, too long to show here: {WHERE_ELSE}]")
    return Selection("\n\n".join(lines), ids, waiting)


def context_output(event: str, text: str) -> dict[str, Any]:
    """The output that adds ``text`` to the model's context (UserPromptSubmit, SessionStart)."""
    return {"hookSpecificOutput": {"hookEventName": event, "additionalContext": text}}


def stop_reason(text: str) -> str:
    """Why the stop guard keeps the turn going: read the peer mail ``text`` first."""
    return (
        "Peer messages arrived for you before you finished. Read them; reply with "
        "send_message or act on them if they need it; then finish your turn.\n\n" + text
    )


def stop_output(text: str) -> dict[str, Any]:
    """The Stop output (JSON on stdout) that keeps the turn going: Codex's way."""
    return {"decision": "block", "reason": stop_reason(text)}


def blocks_by_exit_status(client_type: str) -> bool:
    """True when the stop guard blocks with exit status 2 and the reason on stderr (Claude Code)."""
    return client_type == "claude-code"


def stop_may_block(payload: Mapping[str, Any], blocks_this_turn: int, max_blocks: int = MAX_STOP_BLOCKS) -> bool:
    """The stop guard's loop guard: never while ``stop_hook_active``, at most ``max_blocks`` a turn."""
    if payload.get("stop_hook_active"):
        return False
    return blocks_this_turn < max_blocks
