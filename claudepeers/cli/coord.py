"""``claude-peers claims`` and ``claude-peers groups``: what the agents claimed and which
groups they formed, for the operator. Neither starts a broker."""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from claudepeers.cli.runner import print_json, run_with_broker


class ClaimsOptions(usage.Options):
    """``claude-peers claims [--json] [--repo DIR]``."""

    synopsis = "Usage: claude-peers claims [--json] [--repo <common git dir>]"
    optFlags = [("json", "j", "Print the claims as a JSON list")]
    optParameters = [("repo", None, None, "Only the claims of this repository (its common git dir)")]

    def run(self) -> int:
        """List every live claim: repository, pattern, holder, expiry and reason."""

        async def body(reactor: Any, protocol: Any, settings: Any) -> int:
            from claudepeers.wire import commands as wire

            arguments = {"repo": self["repo"]} if self["repo"] else {}
            claims = (await protocol.callRemote(wire.ListClaims, **arguments))["claims"]
            if self["json"]:
                print_json(claims)
                return 0
            if not claims:
                print("No claims.")
                return 0
            repo = None
            for claim in claims:
                if claim["repo"] != repo:
                    repo = claim["repo"]
                    print(f"{repo}:")
                print(f"  {claim['pattern']}  {claim['peer_name']} ({claim['peer_id']})  until {claim['expires_at']}"
                      f"  {claim['reason'] or '(no reason given)'}")
            return 0

        return run_with_broker(body)


class GroupsOptions(usage.Options):
    """``claude-peers groups [--json]``."""

    synopsis = "Usage: claude-peers groups [--json]"
    optFlags = [("json", "j", "Print the groups as a JSON list")]

    def run(self) -> int:
        """List every group and its members."""

        async def body(reactor: Any, protocol: Any, settings: Any) -> int:
            from claudepeers.wire import commands as wire

            groups = (await protocol.callRemote(wire.ListGroups))["groups"]
            if self["json"]:
                print_json(groups)
                return 0
            if not groups:
                print("No groups.")
            for group in groups:
                members = ", ".join(f"{m['name']} ({m['id']}, {m['state']})" for m in group["members"])
                print(f"group:{group['name']}: {members}")
            return 0

        return run_with_broker(body)
