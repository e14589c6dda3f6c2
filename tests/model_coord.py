"""Rules of the broker model (tests/test_model.py) for sending to many, groups and claims.

A mixin of ``BrokerModel``: its rules use the model's agents, connections and clock, and
add to what the model expects (``sent``), so the model's own invariants (nothing lost,
nothing shown twice, pushes in order) cover every message of a fan-out too. Invariants
here: each fan-out answers every expected recipient once, with a message of its own; no
two live peers hold overlapping claims; the broker's live claims are the model's.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, invariant, rule

from claudepeers.broker import pathglob
from claudepeers.wire import commands as wire

GROUPS = ["g1", "g2"]
PATTERNS = ["src", "src/*.py", "src/a.py", "docs", "**/*.md", "docs/a.md"]
#: Paths that witness every overlap among PATTERNS (the model's own oracle, by brute force).
UNIVERSE = ["src/a.py", "src/b.md", "src/d/a.py", "docs/a.md", "docs/x/y", "README.md", "other",
            "src/a.py/x.md", "docs/a.md/x.md"]  # a file pattern covers what is below a directory so named


def overlapping(first: str, second: str) -> bool:
    """Whether two of PATTERNS share a path of UNIVERSE."""
    return any(pathglob.covers(first, p) and pathglob.covers(second, p) for p in UNIVERSE)


class CoordRules:
    """Fan-out, group and claim rules (see the module's docstring)."""

    agents = Bundle("agents")
    # Provided by BrokerModel.
    all_agents: list
    sent: dict
    clock: Any
    broker: Any
    limits: Any

    def _coord_state(self) -> tuple[dict[str, set[str]], dict[str, dict[str, float]]]:
        if not hasattr(self, "_model_groups"):
            self._model_groups: dict[str, set[str]] = {}
            self._model_claims: dict[str, dict[str, float]] = {}
        return self._model_groups, self._model_claims

    def _alive_ids(self) -> set[str]:
        return {a.peer_id for a in self.all_agents if a.alive}

    @rule(agent=agents, group=st.sampled_from(GROUPS), join=st.booleans())
    def join_or_leave_group(self, agent: Any, group: str, join: bool) -> None:
        """A connected peer joins or leaves a group; membership is per peer, not per connection."""
        if agent.client is None:
            return
        groups, _ = self._coord_state()
        if join:
            answer = self.call(agent, wire.JoinGroup, name=group)  # type: ignore[attr-defined]
            groups.setdefault(group, set()).add(agent.peer_id)
            assert agent.peer_id in {m["id"] for m in answer["group"]["members"]}
        else:
            answer = self.call(agent, wire.LeaveGroup, name=group)  # type: ignore[attr-defined]
            assert answer["left"] == (agent.peer_id in groups.get(group, set()))
            groups.get(group, set()).discard(agent.peer_id)

    @rule(sender=agents, audience=st.sampled_from(["scope:machine", "scope:directory", "group:g1", "group:g2"]),
          body=st.text(min_size=1, max_size=20).filter(lambda b: b.strip()))
    def send_to_many(self, sender: Any, audience: str, body: str) -> None:
        """A send to many: every expected recipient exactly once, never the sender, each its own
        message with the outcome a single send would have had."""
        target = audience
        if sender.client is None:
            return
        groups, _ = self._coord_state()
        alive = [a for a in self.all_agents if a.alive and a is not sender]
        if target == "scope:directory":
            expected = [a for a in alive if a.cwd == sender.cwd]
        elif target.startswith("group:"):
            members = groups.get(target[len("group:"):], set())
            expected = [a for a in alive if a.peer_id in members]
        else:
            expected = alive
        try:
            answer = self.call(sender, wire.SendMany, to=target, body=body)  # type: ignore[attr-defined]
        except Exception as error:
            if not hasattr(error, "failure"):
                raise
            if "\x00" in body:  # refused on both engines, as for one recipient
                assert error.failure.check(wire.InvalidArgument), error  # type: ignore[attr-defined]
                return
            assert not expected, f"send to {target} failed: {error}"
            assert error.failure.check(wire.UnknownPeer), error  # type: ignore[attr-defined]
            return
        assert "\x00" not in body, "a body with a NUL character was accepted"
        outcomes = answer["recipients"]
        ids = [o["to_id"] for o in outcomes]
        assert len(ids) == len(set(ids)), f"a recipient answered twice: {ids}"
        assert set(ids) == {a.peer_id for a in expected}, (target, ids)
        assert len({o["message_id"] for o in outcomes}) == len(outcomes)
        by_id = {a.peer_id: a for a in expected}
        for outcome in outcomes:
            recipient = by_id[outcome["to_id"]]
            shown = recipient.client is not None and recipient.delivery == "push" and not recipient.slow
            assert outcome["status"] == ("shown" if shown else "queued"), outcome
            self.sent[recipient.peer_id].append(outcome["message_id"])

    @rule(agent=agents, patterns=st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=2),
          ttl=st.sampled_from([5.0, 60.0]))
    def claim(self, agent: Any, patterns: list[str], ttl: float) -> None:
        """A claim is granted exactly when no live claim of another live peer overlaps it."""
        if agent.client is None:
            return
        _, claims = self._coord_state()
        now = self.clock.seconds()
        alive = self._alive_ids()
        same_repo = {a.peer_id for a in self.all_agents if a.cwd == agent.cwd}  # the model's repos: cwds
        clash = any(overlapping(mine, theirs)
                    for holder, held in claims.items() if holder != agent.peer_id and holder in alive & same_repo
                    for theirs, until in held.items() if until > now for mine in patterns)
        try:
            self.call(agent, wire.ClaimPaths, paths=patterns, reason="model", ttl_seconds=ttl)  # type: ignore[attr-defined]
        except Exception as error:
            if not hasattr(error, "failure"):
                raise
            assert clash, f"claim {patterns} refused: {error}"
            assert error.failure.check(wire.ClaimConflict), error  # type: ignore[attr-defined]
            return
        assert not clash, f"claim {patterns} of {agent.peer_id} granted over {claims}"
        for pattern in patterns:
            claims.setdefault(agent.peer_id, {})[pattern] = now + ttl

    @rule(agent=agents, every=st.booleans(), pattern=st.sampled_from(PATTERNS))
    def release(self, agent: Any, every: bool, pattern: str) -> None:
        """release_paths ends the named claim (or all) and says which it did not hold."""
        if agent.client is None:
            return
        _, claims = self._coord_state()
        held = claims.setdefault(agent.peer_id, {})
        now = self.clock.seconds()
        live = {p for p, until in held.items() if until > now}
        answer = self.call(agent, wire.ReleasePaths, **({} if every else {"paths": [pattern]}))  # type: ignore[attr-defined]
        if every:
            assert set(answer["released"]) == live
            held.clear()
        else:
            assert answer["released"] == ([pattern] if pattern in live else [])
            held.pop(pattern, None)

    @invariant()
    def no_two_live_peers_hold_overlapping_claims(self) -> None:
        """Among live claims, any two of different peers are disjoint; they are the model's."""
        if not hasattr(self, "broker"):
            return
        live = self.broker.coordination.claims.live()
        for index, first in enumerate(live):
            for second in live[index + 1:]:
                if first.peer_id != second.peer_id and first.repo == second.repo:
                    assert pathglob.overlap(first.pattern, second.pattern) is None, (first, second)
        _, claims = self._coord_state()
        now = self.clock.seconds()
        alive = self._alive_ids()
        expected = {(holder, p) for holder, held in claims.items() if holder in alive
                    for p, until in held.items() if until > now}
        assert {(c.peer_id, c.pattern) for c in live} == expected
