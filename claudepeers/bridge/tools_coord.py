"""The coordination tools: groups, claims on files, and the answer of a send to many.

``send_message`` itself stays in :mod:`tools` (a ``to_id`` of ``scope:...`` or
``group:...`` goes to the broker's SendMany and is worded by :func:`fanout_result`);
the tools here join :class:`~claudepeers.bridge.tools.PeerTools` as a mixin, and their
schemas join :data:`.tool_schemas.TOOLS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from claudepeers.common.render import clean_line
from claudepeers.wire import commands as wire

from claudepeers.bridge.broker_calls import ToolResult

FANOUT_PREFIXES = ("scope:", "group:")
FANOUT_TARGETS = "scope:repo, scope:directory, scope:machine, scope:network or group:<name>"
_STRING = {"type": "string"}
_GROUP = {**_STRING, "minLength": 1, "maxLength": 64, "description": "the group's name (letters, digits, . _ -)"}
_PATHS = {"type": "array", "items": {**_STRING, "minLength": 1}, "minItems": 1, "maxItems": 64,
          "description": "paths or globs relative to your repository's top level (* ? [..] within a "
                         "component, ** across directories; a directory covers everything below it)"}

TOOLS: dict[str, dict[str, Any]] = {
    "join_group": {
        "description": ("Join a named group of agents (it exists while it has members); a message sent to "
                        "group:<name> reaches every member. You stay in it across reconnects."),
        "inputSchema": {"type": "object", "properties": {"name": _GROUP}, "required": ["name"],
                        "additionalProperties": False},
    },
    "leave_group": {
        "description": "Leave a group you joined.",
        "inputSchema": {"type": "object", "properties": {"name": _GROUP}, "required": ["name"],
                        "additionalProperties": False},
    },
    "list_groups": {
        "description": "List every group with its members (id, name, online state).",
        "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False},
    },
    "claim_paths": {
        "description": (
            "Claim files you are about to edit, so that other agents do not edit them at the same time "
            "(advisory; shown in list_peers, and a pre-commit guard can enforce it). paths: paths or globs "
            "relative to your repository's top level. Refused, naming the holder and its reason, when "
            "another agent's live claim overlaps; claiming again renews. Release them when done."),
        "inputSchema": {
            "type": "object",
            "properties": {
                "paths": _PATHS,
                "reason": {**_STRING, "maxLength": 1024, "description": "what you are doing there"},
                "ttl_seconds": {"type": "number", "minimum": 1,
                                "description": "how long the claim lasts (default 3600; at most a day unless raised)"},
            },
            "required": ["paths", "reason"],
            "additionalProperties": False,
        },
    },
    "release_paths": {
        "description": "Release your claims: the given patterns (as you claimed them), or all with all=true.",
        "inputSchema": {
            "type": "object",
            "properties": {"paths": {**_PATHS, "description": "the patterns to release, as claimed"},
                           "all": {"type": "boolean", "description": "release every claim you hold"}},
            "additionalProperties": False,
        },
    },
}


def is_fanout(target: str) -> bool:
    """True for a ``to_id`` that names many recipients."""
    return target.strip().startswith(FANOUT_PREFIXES)


def _result(text: str, is_error: bool = False) -> ToolResult:
    return ToolResult(text, is_error)


def fanout_result(answer: Mapping[str, Any]) -> Any:
    """The agent's text for a SendMany answer: a count per outcome, then one line each."""
    recipients = answer["recipients"]
    counts: dict[str, int] = {}
    for outcome in recipients:
        counts[outcome["status"]] = counts.get(outcome["status"], 0) + 1
    noun = "peer" if len(recipients) == 1 else "peers"
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    lines = [f"Sent to {clean_line(answer['target'])} ({len(recipients)} {noun}): {summary}."]
    words = {"shown": "shown to", "woke": "woke", "queued": "queued for", "refused": "refused for"}
    for outcome in recipients:
        who = f"{clean_line(outcome['to_name'])} ({outcome['to_id']})"
        number = f"#{outcome['message_id']} " if outcome.get("message_id") is not None else ""
        detail = clean_line(outcome.get("detail"), 300)
        lines.append(f"- {number}{words.get(outcome['status'], outcome['status'])} {who}" + (f": {detail}" if detail else ""))
    return _result("\n".join(lines), is_error=not any(o["status"] != "refused" for o in recipients))


def coord_lines(peer: Mapping[str, Any]) -> list[str]:
    """The lines of a listed peer about its groups and claims (none when it has neither)."""
    lines = []
    if peer.get("groups"):
        lines.append("Groups: " + ", ".join(clean_line(g) for g in peer["groups"]))
    for claim in peer.get("claims") or []:
        lines.append(f"Claims: {clean_line(claim.get('pattern'), 300)} until {clean_line(claim.get('expires_at'))}"
                     + (f" ({clean_line(claim.get('reason'), 200)})" if claim.get("reason") else ""))
    return lines


class CoordTools:
    """The coordination tools of :class:`~claudepeers.bridge.tools.PeerTools`."""

    _broker: Any

    async def _tool_join_group(self, name: str) -> Any:
        answer = await self._broker.call(wire.JoinGroup, name=name)
        group = answer["group"]
        members = ", ".join(f"{clean_line(m['name'])} ({m['id']})" for m in group["members"])
        return _result(f"You are in group {clean_line(group['name'])}; send to it with to_id "
                       f"\"group:{clean_line(group['name'])}\". Members: {members}.")

    async def _tool_leave_group(self, name: str) -> Any:
        answer = await self._broker.call(wire.LeaveGroup, name=name)
        if answer["left"]:
            return _result(f"You left group {clean_line(name)}.")
        return _result(f"You were not in group {clean_line(name)}.")

    async def _tool_list_groups(self) -> Any:
        groups = (await self._broker.call(wire.ListGroups))["groups"]
        if not groups:
            return _result("No groups. join_group(name) starts one.")
        lines = []
        for group in groups:
            members = ", ".join(f"{clean_line(m['name'])} ({m['id']}, {m['state']})" for m in group["members"])
            lines.append(f"group:{clean_line(group['name'])}: {members}")
        return _result("\n".join(lines))

    async def _tool_claim_paths(self, paths: list[str], reason: str, ttl_seconds: float | None = None) -> Any:
        arguments: dict[str, Any] = {"paths": paths, "reason": reason}
        if ttl_seconds is not None:
            arguments["ttl_seconds"] = float(ttl_seconds)
        claims = (await self._broker.call(wire.ClaimPaths, **arguments))["claims"]
        patterns = ", ".join(clean_line(c["pattern"], 300) for c in claims)
        until = clean_line(claims[0]["expires_at"]) if claims else "?"
        return _result(f"Claimed {patterns} until {until}. Other agents see it in list_peers; release_paths "
                       "when you are done.")

    async def _tool_release_paths(self, paths: list[str] | None = None, all: bool = False) -> Any:  # noqa: A002
        if paths is None and not all:
            return _result("release_paths needs paths (as you claimed them) or all=true.", is_error=True)
        answer = await self._broker.call(wire.ReleasePaths, **({} if all else {"paths": paths}))
        released = ", ".join(clean_line(p, 300) for p in answer["released"]) or "nothing"
        text = f"Released {released}."
        if answer["not_held"]:
            text += " You held no claim on " + ", ".join(clean_line(p, 300) for p in answer["not_held"]) + "."
        return _result(text)
