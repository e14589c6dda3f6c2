"""The MCP tools at work: each call validated, run against the broker, and worded.

Their declarations and validation are in :mod:`.tool_schemas`. Every failure is an
``isError`` result whose text tells the agent what to do next; nothing here raises to the SDK.

The tools reach the broker through a :class:`BrokerCalls` object (an ``async call``), so
they can be tested with a fake that records the calls.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Awaitable, Callable, Sequence

from twisted.protocols import amp

from claudepeers.common.render import clean_line
from claudepeers.wire import commands as wire

from claudepeers.bridge.broker_calls import BrokerCalls, BrokerTimeout, BrokerUnreachable, ToolResult
from claudepeers.bridge.tool_schemas import validation_error
from claudepeers.bridge.tools_coord import CoordTools, coord_lines, fanout_result, is_fanout

#: Keys of sends whose outcome is unknown (timed out, connection lost), kept so that the
#: same send again reuses its key and the broker stores it once. By (to, body digest).
RETRY_KEYS = 64


ShowWaiting = Callable[[], Awaitable[str]]


class PeerTools(CoordTools):
    """Runs one tool call against the broker and words the answer for the agent."""

    def __init__(self, broker: BrokerCalls, check_messages: ShowWaiting, more: Sequence[Any] = ()) -> None:
        self._broker = broker
        self._check_messages = check_messages
        self._retry_keys: OrderedDict[tuple[str, bytes], str] = OrderedDict()
        #: Objects with the ``_tool_*`` methods of registered tools (tools_threads.ThreadTools).
        self._more = tuple(more)

    async def call(self, name: str, arguments: Mapping[str, Any] | None) -> ToolResult:
        """Validate, run, and turn every failure into an ``isError`` text."""
        problem = validation_error(name, arguments)
        if problem is not None:
            return ToolResult(problem, is_error=True)
        method = getattr(self, "_tool_" + name, None) or next(
            getattr(tools, "_tool_" + name) for tools in self._more if hasattr(tools, "_tool_" + name))
        try:
            return await method(**dict(arguments or {}))
        except BrokerTimeout as error:
            text = (
                f"{name} failed: the claude-peers broker did not answer ({error}); it may be "
                "stopped or overloaded. Try again in a few seconds, or ask the user to run "
                "`claude-peers status`."
            )
            if name == "send_message":
                text += (
                    " The message may already be stored: calling send_message again with the "
                    "same to_id and message is safe, it is stored and shown only once."
                )
            return ToolResult(text, is_error=True)
        except BrokerUnreachable as error:
            return ToolResult(
                f"{name} failed: the claude-peers broker is not reachable ({error}). The bridge "
                "keeps reconnecting in the background; try again in a few seconds, or ask the "
                "user to run `claude-peers status`.",
                is_error=True,
            )
        except wire.PeersError as error:
            return ToolResult(_explain(name, error), is_error=True)
        except amp.TooLong as error:
            what = (error.keyName or b"an argument").decode("ascii", "replace").split(".")[0]
            return ToolResult(
                f"{name} failed: {what} is too long to send to the broker (one value is at most "
                f"{amp.MAX_VALUE_LENGTH:,} bytes in UTF-8). Shorten it.",
                is_error=True,
            )
        except UnicodeEncodeError:
            return ToolResult(
                f"Invalid arguments for {name}: the text holds a lone surrogate (\\ud800-\\udfff), "
                "which is not valid Unicode and cannot be sent. Remove it and call again.",
                is_error=True,
            )

    async def _tool_list_peers(self, scope: str = "machine") -> ToolResult:
        answer = await self._broker.call(wire.ListPeers, scope=scope)
        peers = answer["peers"]
        if not peers:
            hint = "" if scope == "machine" else " Try scope 'machine' to see every agent on this machine."
            return ToolResult(f"No other peers (scope: {scope}).{hint}")
        noun = "peer" if len(peers) == 1 else "peers"
        blocks = [f"{len(peers)} {noun} (scope: {scope}):"]
        blocks += [format_peer(peer) for peer in peers]
        return ToolResult("\n\n".join(blocks))

    async def _tool_send_message(self, to_id: str, message: str, reply_to: int | None = None) -> ToolResult:
        # A fresh key per call: if the connection dies mid-send the link repeats the call,
        # and the broker stores and pushes the message only once. (128 random bits, as a
        # uuid4 has, at a quarter of uuid4's cost.) A send whose outcome is unknown keeps
        # its key for the agent's retry of the same message.
        size = len(message.encode("utf-8", "surrogatepass"))
        if size > wire.MAX_BIG_TEXT_BYTES:
            return ToolResult(
                f"send_message failed: the message is {size:,} bytes; the wire carries at most "
                f"{wire.MAX_BIG_TEXT_BYTES:,} bytes (8 MiB) and the broker accepts at most its body "
                "limit (CLAUDE_PEERS_MAX_BODY_BYTES, 32 KiB unless raised). Shorten the message or "
                "send it in parts.",
                is_error=True,
            )
        many = is_fanout(to_id)
        if many and reply_to is not None:
            return ToolResult(f"send_message failed: a reply goes to one peer, not to {to_id}; "
                              "send the reply to the message's sender.", is_error=True)
        unsettled = (to_id, hashlib.sha256(message.encode("utf-8", "surrogatepass")).digest())
        key = self._retry_keys.pop(unsettled, None) or os.urandom(16).hex()
        try:
            threading = {} if reply_to is None else {"reply_to": reply_to}
            answer = await self._broker.call(wire.SendMany if many else wire.Send, to=to_id, body=message,
                                             client_key=key, **threading)
        except BrokerUnreachable:
            self._retry_keys[unsettled] = key
            while len(self._retry_keys) > RETRY_KEYS:
                self._retry_keys.popitem(last=False)
            raise
        if many:
            return fanout_result(answer)
        target = f"{clean_line(answer['to_name'])} ({answer['to_id']})"
        detail = clean_line(answer.get("detail"), 400)
        status = answer["status"]
        if reply_to is not None:
            target += f" (a reply in thread #{answer.get('thread_id') or reply_to})"
        if status == "shown":
            text = f"Message #{answer['message_id']} shown to {target}"
            text += f": {detail}." if detail else ": that agent's session received it."
        elif status == "woke":
            text = f"Message #{answer['message_id']} woke {target}"
            text += f": {detail}." if detail else ": the idle agent was woken to read it."
        else:
            text = f"Message #{answer['message_id']} queued for {target}"
            text += f": {detail}." if detail else "."
        return ToolResult(text)

    async def _tool_set_summary(self, summary: str) -> ToolResult:
        await self._broker.call(wire.SetSummary, summary=summary)
        if not summary.strip():
            return ToolResult("Summary cleared.")
        return ToolResult(f"Summary set: {clean_line(summary, 1024)}")

    async def _tool_check_messages(self) -> ToolResult:
        return ToolResult(await self._check_messages())

    async def _tool_kill_peer(self, peer_id: str) -> ToolResult:
        answer = await self._broker.call(wire.KillPeer, target=peer_id)
        detail = clean_line(answer.get("detail"), 400)
        return ToolResult(f"kill_peer {answer['peer_id']}: {answer['outcome']}. {detail}".rstrip())

    async def _tool_whoami(self) -> ToolResult:
        answer = await self._broker.call(wire.Whoami)
        return ToolResult("You are:\n\n" + format_peer(answer["peer"]))

    async def _tool_set_name(self, name: str) -> ToolResult:
        answer = await self._broker.call(wire.SetName, name=name)
        return ToolResult(f"Your peer name is now {clean_line(answer['name'])}.")


def format_peer(peer: Mapping[str, Any]) -> str:
    """One block per peer; the first line is ``ID: <id>``."""
    lines = [f"ID: {clean_line(peer.get('id'))}", f"Name: {clean_line(peer.get('name'))}"]
    lines.append(f"Client: {clean_line(peer.get('client_type')) or 'unknown'}")
    lines.append(f"CWD: {clean_line(peer.get('cwd'), 400)}")
    root = clean_line(peer.get("git_root"), 400)
    branch = clean_line(peer.get("branch"))
    if root:
        lines.append(f"Repo: {root}" + (f" (branch {branch})" if branch else ""))
    else:
        lines.append("Repo: none")
    summary = clean_line(peer.get("summary"), 1024)
    lines.append(f"Summary: {summary or '(none set)'}")
    state = clean_line(peer.get("state"))
    seen = clean_line(peer.get("last_seen"))
    lines.append(f"Last seen: {seen or 'unknown'}" + (f" ({state})" if state else ""))
    if peer.get("unread"):
        lines.append(f"Unread messages: {peer['unread']}")
    if peer.get("delivery") and state == "online":
        lines.append(f"Gets mail by: {clean_line(peer['delivery'], 200)}")
    return "\n".join(lines + coord_lines(peer))


_ADVICE: dict[type[Exception], str] = {
    wire.UnknownPeer: "Call list_peers to see who is there, then use an ID or a unique name.",
    wire.AmbiguousPeer: "Use the peer's ID instead of the name.",
    wire.PeerGone: "That agent session has ended; pick another peer with list_peers.",
    wire.LimitExceeded: "Shorten the text or wait a little before sending more.",
    wire.InvalidArgument: "Check the arguments and call again.",
    wire.NameTaken: "Choose another name.",
    wire.KillRefused: "",
    wire.ClaimConflict: "Ask the holder (send_message), wait for its claim to end, or claim other paths.",
    wire.NotRegistered: "The bridge is still registering with the broker; try again in a moment.",
    wire.BrokerUnavailable: "The broker is busy or shutting down; try again in a moment.",
}


def _explain(name: str, error: wire.PeersError) -> str:
    """The broker's own words (they list candidates), then what to do about it."""
    text = clean_line(str(error), 2000) or type(error).__name__
    advice = _ADVICE.get(type(error), "")
    return f"{name} failed: {text}" + (f" {advice}" if advice else "")
