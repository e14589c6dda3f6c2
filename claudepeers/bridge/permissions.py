"""Claude Code's permission prompts, relayed to the broker and answered from there.

What Claude Code does (read in the bundled code of 2.1.197 and 2.1.332, and seen with both,
interactive in tmux): when a channel server declared ``claude/channel`` and
``claude/channel/permission`` (and its ``tengu_harbor_permissions`` feature is on), every
permission dialog it opens is also sent to that server as::

    notifications/claude/channel/permission_request
      {"request_id": "fbenr", "tool_name": "Bash", "description": "Create the marker file",
       "input_preview": "{ \\"command\\": \\"touch /tmp/x\\", ... }"}

(``request_id``: five lowercase letters; 2.1.332 may add ``tool_kind``, ``mcp_server`` and
``mcp_skill``). The first answer wins: the terminal, or a
``notifications/claude/channel/permission {"request_id", "behavior": "allow"|"deny"}`` from
the server (matched without regard to case; a deny reaches the model as "Denied via channel
<server>"). When the terminal answers first, Claude Code tells the server nothing, and a late
answer is dropped ("no pending entry").

So the bridge finds out from the session transcript: the assistant's ``tool_use`` block
(id, name, input) is written before the dialog opens, its ``tool_result`` once the call ends
(run, denied, or interrupted). :class:`ToolCalls` follows the open calls; a request is tied
to the open calls of its tool whose input the preview shows (Claude Code writes the transcript
in batches, so the ``tool_use`` line may come a little after the request), and ends
(``PermissionEnded``) when they all have a result. A request that matches no open call stays until it is answered
or the bridge disconnects (without a transcript to read, as with a forced ``--delivery push``,
that is the only way it ends).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.protocols import amp

from claudepeers.wire import commands as wire

REQUEST_METHOD = "notifications/claude/channel/permission_request"
ANSWER_METHOD = "notifications/claude/channel/permission"
#: The broker keeps at most this much of a description or preview (approvals.MAX_TEXT_CHARS).
MAX_TEXT_CHARS = 4000
#: Requests held at once (Claude Code shows one dialog at a time; this bounds a misbehaving one).
MAX_HELD = 32
#: Open tool calls remembered from the transcript (older ones are forgotten first).
MAX_OPEN_CALLS = 256
#: How much of one input value must appear in the preview to tie a request to that call.
MATCH_CHARS = 40


def answer_line(request_id: str, behavior: str) -> bytes:
    """The notification line that answers one request."""
    notification = {"jsonrpc": "2.0", "method": ANSWER_METHOD,
                    "params": {"request_id": request_id, "behavior": behavior}}
    return json.dumps(notification, separators=(",", ":")).encode("utf-8") + b"\n"


def parse_request(params: Mapping[str, Any]) -> dict[str, str] | None:
    """The fields of a ``permission_request`` (texts cut to MAX_TEXT_CHARS), or None if malformed."""
    request_id, tool_name = params.get("request_id"), params.get("tool_name")
    if not isinstance(request_id, str) or not request_id or not isinstance(tool_name, str) or not tool_name:
        return None
    texts = {}
    for name in ("description", "input_preview"):
        value = params.get(name)
        text = value if isinstance(value, str) else ""
        texts[name] = text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 1] + "\u2026"
    return {"request_id": request_id[:64], "tool_name": tool_name[:200], **texts}


class ToolCalls:
    """The agent's tool calls that have started and not ended, read from transcript lines."""

    def __init__(self) -> None:
        self.open: dict[str, tuple[str, Any]] = {}  # tool_use id -> (tool name, input)

    def feed(self, line: bytes) -> list[str]:
        """One transcript line; the ids of the calls it ends (usually none)."""
        if b'"tool_use"' not in line and b'"tool_result"' not in line:
            return []
        try:
            entry = json.loads(line)
        except ValueError:
            return []
        message = entry.get("message") if isinstance(entry, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            return []
        ended = []
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "tool_use" and isinstance(part.get("id"), str):
                self.open[part["id"]] = (str(part.get("name")), part.get("input"))
                while len(self.open) > MAX_OPEN_CALLS:
                    self.open.pop(next(iter(self.open)))
            elif part.get("type") == "tool_result" and isinstance(part.get("tool_use_id"), str):
                if self.open.pop(part["tool_use_id"], None) is not None:
                    ended.append(part["tool_use_id"])
        return ended

    def match(self, tool_name: str, preview: str) -> set[str]:
        """The open calls of ``tool_name`` whose input the preview shows best (all of that
        tool's open calls when none is shown better than another)."""
        scored: dict[str, int] = {}
        for call_id, (name, arguments) in self.open.items():
            if name == tool_name:
                scored[call_id] = sum(1 for text in _leaf_texts(arguments) if text and text in preview)
        if not scored:
            return set()
        best = max(scored.values())
        return {call_id for call_id, score in scored.items() if score == best}


def _leaf_texts(value: Any) -> list[str]:
    """The string values of a tool input, as they would look inside a JSON preview (cut short)."""
    if isinstance(value, str):
        return [json.dumps(value, ensure_ascii=False)[1:-1][:MATCH_CHARS]]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _leaf_texts(item)]
    if isinstance(value, list):
        return [text for item in value for text in _leaf_texts(item)]
    return []


class PermissionRelay:
    """The bridge's half: forward each prompt to the broker, end it, answer it."""

    log = Logger()

    def __init__(self, call: Callable[..., Deferred], writer: Any, transcript: Any = None) -> None:
        """``call(command, **arguments)`` reaches the broker (once registered); ``writer`` (a
        :class:`~.stdio.LineWriter`) the agent; ``transcript`` (a :class:`~.transcript.TranscriptWatch`,
        if the bridge reads one) shows the tool calls."""
        self._call = call
        self._writer = writer
        self._transcript = transcript
        self.calls = ToolCalls()
        self.pending: dict[str, dict[str, Any]] = {}  # request id (lower case) -> fields, tied calls
        if transcript is not None:
            transcript.line_observers.append(self.transcript_line)

    def _rescan(self) -> None:
        """Read the transcript up to now: the ``tool_use`` of a request was written just before it."""
        if self._transcript is not None and self._transcript.folder is not None:
            self._transcript.scan()

    def requested(self, params: Mapping[str, Any]) -> None:
        """Claude Code opened a permission dialog: hold the request and tell the broker."""
        request = parse_request(params)
        if request is None:
            self.log.warn("ignoring a malformed permission_request: {params!r}", params=dict(params))
            return
        self._rescan()
        key = request["request_id"].lower()
        self.pending.pop(key, None)
        while len(self.pending) >= MAX_HELD:
            self.pending.pop(next(iter(self.pending)))
        self.pending[key] = {**request, "calls": self.calls.match(request["tool_name"], request["input_preview"])}
        self.log.info("permission request {id} for {tool} relayed (its tool call: {calls})", id=request["request_id"],
                      tool=request["tool_name"], calls=", ".join(sorted(self.pending[key]["calls"])) or "not found")
        self._forward(key)

    def _forward(self, key: str) -> None:
        request = self.pending[key]
        d = self._call(wire.PermissionRequest, request_id=request["request_id"], tool_name=request["tool_name"],
                       description=request["description"], input_preview=request["input_preview"])
        d.addErrback(lambda failure: self.log.warn("could not relay permission request {id}: {f}",
                                                   id=request["request_id"], f=failure.getErrorMessage()))

    def registered(self) -> None:
        """A (new) broker connection: what is still pending is relayed again (the broker forgets a
        bridge's requests when its connection closes)."""
        for key in list(self.pending):
            self._forward(key)

    def transcript_line(self, line: bytes) -> None:
        """A new line of the agent's transcript: a request whose calls all ended leaves the list."""
        known = len(self.calls.open)
        ended = self.calls.feed(line)
        if len(self.calls.open) > known:
            # Claude Code writes its transcript in batches: the tool_use may come after the request.
            for request in self.pending.values():
                if not request["calls"]:
                    request["calls"] = self.calls.match(request["tool_name"], request["input_preview"])
        if not ended:
            return
        for key, request in list(self.pending.items()):
            calls = request["calls"]
            if calls and calls.intersection(ended):
                calls.difference_update(ended)
                if not calls:
                    del self.pending[key]
                    self._ended(request["request_id"], "its tool call ended in the agent (answered in its terminal)")

    def _ended(self, request_id: str, reason: str) -> None:
        d = self._call(wire.PermissionEnded, request_id=request_id, reason=reason)
        d.addErrback(lambda failure: self.log.warn("could not tell the broker request {id} ended: {f}",
                                                   id=request_id, f=failure.getErrorMessage()))

    def answer(self, request_id: str, behavior: str) -> bool:
        """The person's answer, from the broker: tell Claude Code; True once it is in the pipe (or
        queued for it). A request unknown here is passed on all the same: Claude Code decides."""
        if behavior not in ("allow", "deny"):
            raise wire.InvalidArgument(f"behavior must be allow or deny, not {behavior!r}")
        self.pending.pop(request_id.lower(), None)
        self.log.info("permission request {id}: {behavior} (from the broker)", id=request_id, behavior=behavior)
        return self._writer.write(answer_line(request_id, behavior)) or not self._writer.broken


class PermissionAnswers(amp.CommandLocator):
    """The bridge connection's responder for the broker's PermissionAnswer (mixed into BridgeAMP)."""

    _link: Any

    @wire.PermissionAnswer.responder
    def permission_answer(self, request_id: str, behavior: str) -> dict[str, bool]:
        """Write the answer to the agent (``written`` False when this bridge relays nothing)."""
        relay = getattr(self._link, "permissions", None)
        if relay is None:
            return {"written": False}
        return {"written": relay.answer(request_id, behavior)}
