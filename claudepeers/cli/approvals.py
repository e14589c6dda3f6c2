"""``claude-peers approvals`` (pending tool approvals) and ``approve`` / ``deny`` (answer one).

Claude Code relays its permission dialogs to a channel server; the bridges forward them to
the broker (claudepeers/broker/approvals.py). The broker answers only the person: an
``approve`` run from an agent's process tree (its shell tool, say) is refused, exit status 4.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from twisted.python import usage

from claudepeers.cli.render import duration, one_line
from claudepeers.cli.runner import print_json, run_with_broker


class ApprovalsOptions(usage.Options):
    """``claude-peers approvals [--json]``."""

    synopsis = "Usage: claude-peers approvals [--json]"
    longdesc = ("List the tool calls waiting for the person's approval in every Claude Code session started "
                "with channels: request, peer, tool, age, description and input. Answer one with "
                "`claude-peers approve <request>` or `claude-peers deny <request>`.")
    optFlags = [("json", "j", "Print the list as JSON")]

    def run(self) -> int:
        """Ask the broker for the pending approvals and print them."""

        async def body(reactor: Any, protocol: Any, settings: Any) -> int:
            from claudepeers.wire import commands as wire

            answer = await protocol.callRemote(wire.ListApprovals)
            if self["json"]:
                print_json(answer["approvals"])
            else:
                print(format_approvals(answer["approvals"]))
            return 0

        return run_with_broker(body)


class _AnswerOptions(usage.Options):
    """``claude-peers approve|deny <request>``."""

    behavior = "allow"
    optFlags = [("json", "j", "Print the broker's answer as JSON")]

    def parseArgs(self, request: str) -> None:  # noqa: N802 - Twisted's name
        """One request: its id as listed (``<peer>:<id>`` where two peers drew the same id)."""
        self["request"] = request

    def run(self) -> int:
        """Send the answer; the broker refuses it to an agent's process tree (exit 4)."""

        async def body(reactor: Any, protocol: Any, settings: Any) -> int:
            from claudepeers.wire import commands as wire

            answer = await protocol.callRemote(wire.AnswerApproval, request=self["request"], behavior=self.behavior)
            if self["json"]:
                print_json(dict(answer))
            else:
                print(f"{answer['detail']}.")
            return 0

        return run_with_broker(body)


class ApproveOptions(_AnswerOptions):
    """``claude-peers approve <request>``: let the tool call run."""

    synopsis = "Usage: claude-peers approve [--json] <request>"
    longdesc = "Allow one pending tool call (see `claude-peers approvals`). Only the person may; never an agent."
    behavior = "allow"


class DenyOptions(_AnswerOptions):
    """``claude-peers deny <request>``: refuse the tool call (the agent reads "Denied via channel")."""

    synopsis = "Usage: claude-peers deny [--json] <request>"
    longdesc = "Deny one pending tool call (see `claude-peers approvals`). Only the person may; never an agent."
    behavior = "deny"


def format_approvals(approvals: Iterable[Mapping[str, Any]]) -> str:
    """The pending approvals as a few lines each, oldest first."""
    listed = list(approvals)
    if not listed:
        return "No tool calls are waiting for approval."
    lines = []
    for approval in listed:
        lines.append(f"{approval['request']}  {approval['tool_name']}  for {approval['peer_name']} "
                     f"({approval['peer_id']}), asked {duration(float(approval['age_seconds']))} ago")
        if approval.get("description"):
            lines.append(f"    {one_line(approval['description'], 160)}")
        if approval.get("input_preview"):
            lines.append(f"    input: {one_line(approval['input_preview'], 160)}")
    count = len(listed)
    lines.append(f"{count} waiting; answer with `claude-peers approve <request>` or `claude-peers deny <request>`.")
    return "\n".join(lines)
