"""The coordination tools against a recording fake broker: which command, and the agent's words."""

from __future__ import annotations

from claudepeers.wire import commands as wire

from bridge_support import asyncio_test
from test_bridge_tools import PEER, tools_with


@asyncio_test
async def test_send_to_a_scope_uses_send_many_and_lists_each_outcome() -> None:
    """One answer: a count per outcome, then one line per recipient, refusals with the reason."""
    tools, broker = tools_with({wire.SendMany: {"target": "scope:repo", "recipients": [
        {"message_id": 7, "to_id": "aaaa1111", "to_name": "web", "status": "shown", "detail": "web has been shown it"},
        {"message_id": 8, "to_id": "bbbb2222", "to_name": "db", "status": "queued", "detail": "db is offline"},
        {"message_id": None, "to_id": "cccc3333", "to_name": "ops", "status": "refused", "detail": "inbox full"},
    ]}})
    result = await tools.call("send_message", {"to_id": "scope:repo", "message": "standup"})
    assert not result.is_error
    assert result.text.splitlines() == [
        "Sent to scope:repo (3 peers): 1 queued, 1 refused, 1 shown.",
        "- #7 shown to web (aaaa1111): web has been shown it",
        "- #8 queued for db (bbbb2222): db is offline",
        "- refused for ops (cccc3333): inbox full",
    ]
    command, arguments = broker.calls[0]
    assert command is wire.SendMany and arguments["to"] == "scope:repo" and arguments["client_key"]


@asyncio_test
async def test_a_send_refused_for_everyone_is_an_error() -> None:
    """Nobody got it: isError, so the agent does not believe it was sent."""
    tools, _ = tools_with({wire.SendMany: {"target": "group:x", "recipients": [
        {"message_id": None, "to_id": "a", "to_name": "a", "status": "refused", "detail": "full"}]}})
    assert (await tools.call("send_message", {"to_id": "group:x", "message": "hi"})).is_error


@asyncio_test
async def test_claim_conflict_names_the_holder_and_what_to_do() -> None:
    """A refused claim is an isError result with the broker's words and advice."""
    tools, _ = tools_with({wire.ClaimPaths: wire.ClaimConflict("src overlaps src/a.py, claimed by api (ab12cd34)")})
    result = await tools.call("claim_paths", {"paths": ["src"], "reason": "refactor"})
    assert result.is_error and "claimed by api (ab12cd34)" in result.text and "send_message" in result.text


@asyncio_test
async def test_release_needs_paths_or_all_and_groups_are_worded() -> None:
    """release_paths with neither is refused locally; join_group names how to send to the group."""
    tools, broker = tools_with({
        wire.ReleasePaths: {"released": ["src"], "not_held": ["docs"]},
        wire.JoinGroup: {"group": {"name": "rev", "members": [{"id": "ab12cd34", "name": "api", "state": "online"}]}},
    })
    assert (await tools.call("release_paths", {})).is_error
    assert (await tools.call("release_paths", {"all": True})).text == "Released src. You held no claim on docs."
    assert broker.calls[-1] == (wire.ReleasePaths, {})
    joined = (await tools.call("join_group", {"name": "rev"})).text
    assert 'to_id "group:rev"' in joined and "api (ab12cd34)" in joined
    assert (await tools.call("claim_paths", {"paths": [], "reason": "x"})).is_error  # minItems


def test_listed_peers_show_their_groups_and_claims() -> None:
    """format_peer adds a Groups line and one Claims line per claim."""
    from claudepeers.bridge.tools import format_peer

    block = format_peer({**PEER, "groups": ["rev"], "claims": [
        {"pattern": "src/**", "expires_at": "2026-12-02T03:00:00.000Z", "reason": "parser"}]})
    assert "Groups: rev" in block and "Claims: src/** until 2026-12-02T03:00:00.000Z (parser)" in block
