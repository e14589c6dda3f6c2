"""Killing a peer's agent session: who may, the checks of this host, the audit.

A kill needs the UNIX socket (the kernel vouches for the caller), never the caller's own
session, and on this host a process that still is the agent (pid + start time + agent:
:mod:`.killing`, which sends SIGTERM, waits the grace, then SIGKILL). A peer of another
host is killed by its own broker (``remote_kills``, DESIGN 7). Every kill and every
refusal of the local checks is recorded (``Store.record_kill``) and is an event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import inlineCallbacks

from claudepeers.broker import killing
from claudepeers.broker.records import CLI_ID, GONE, Credentials
from claudepeers.common.errors import KillRefused

if TYPE_CHECKING:
    from claudepeers.broker.peers import PeerActor


class Kills:
    """The kills of one broker (``Broker.kill`` and ``Broker.kill_here`` are these)."""

    # ``broker`` is core.Broker, typed Any: core imports this module, not the other way round.
    def __init__(self, broker: Any, processes: Any, reactor: Any) -> None:
        self._broker = broker
        self._processes = processes
        self._reactor = reactor

    @inlineCallbacks
    def kill(self, caller: PeerActor | None, creds: Credentials, target: str, by: str | None = None) -> Any:
        """Verified kill of a peer's agent session; fires with (outcome, peer_id, detail).

        ``by`` names an operator other than the CLI in the audit (the dashboard)."""
        if creds.transport != "unix":
            raise KillRefused("kill_peer needs the UNIX socket: over TCP the kernel cannot vouch for the caller")
        actor = self._broker.resolve(target, caller=caller)
        caller_id = caller.id if caller is not None else (by or CLI_ID)
        record = actor.record
        if caller is actor:
            raise KillRefused("you cannot kill your own session")
        if record.host != self._broker.host and self._broker.remote_kills is not None:
            # Carried out (and audited) by the target's own broker, never here (DESIGN 7).
            return (yield self._broker.remote_kills.request(caller_id, actor))
        if record.thread_id is not None:
            return (yield self.kill_here(actor, caller_id))  # refused there, as every thread kill
        if creds.pid is not None and record.host == self._broker.host and self._processes.is_ancestor(record.agent_pid, creds.pid):
            raise KillRefused(f"{actor.name} is the agent session you are calling from")
        return (yield self.kill_here(actor, caller_id))

    @inlineCallbacks
    def kill_here(self, actor: PeerActor, caller_id: str) -> Any:
        """Kill a peer of this host for ``caller_id`` (``id@host`` for a caller of another host)
        after the local checks (pid + start time + agent); fires with (outcome, peer_id, detail)."""
        record = actor.record
        if record.thread_id is not None:
            raise KillRefused(f"{actor.name} is one thread of a Codex app-server that runs every interactive "
                              "Codex session of its user; killing it would end them all")
        if record.host != self._broker.host:
            raise KillRefused(f"{actor.name} runs on {record.host}, not on this host")
        try:
            proc = killing.check_agent(record.agent_pid, record.agent_start, record.client_type)
        except killing.NotTheAgent as exc:
            yield self._broker.store.record_kill(self._broker.now(), caller_id, actor.id, record.agent_pid, "refused", str(exc))
            self._broker.emit("kill", actor.id, f"kill of {actor.name} by {caller_id} refused: {exc}")
            raise KillRefused(f"refusing to kill {actor.name}: {exc}") from None
        self._broker.emit("kill", actor.id, f"{caller_id} is killing {actor.name} (pid {record.agent_pid})")
        outcome = yield killing.terminate(self._reactor, proc, self._broker.limits.kill_grace_seconds)
        detail = {
            killing.TERMINATED: f"{actor.name} (pid {record.agent_pid}) ended on SIGTERM",
            killing.KILLED: f"{actor.name} (pid {record.agent_pid}) ignored SIGTERM for "
                            f"{self._broker.limits.kill_grace_seconds:g} s and was killed with SIGKILL",
            killing.SURVIVED: f"{actor.name} (pid {record.agent_pid}) is still running after SIGKILL",
            killing.ALREADY_GONE: f"{actor.name} (pid {record.agent_pid}) had already ended",
        }[outcome]
        yield self._broker.store.record_kill(self._broker.now(), caller_id, actor.id, record.agent_pid, outcome, detail)
        if outcome != killing.SURVIVED and actor.state != GONE:
            self._broker._gone(actor)
        self._broker.emit("kill", actor.id, detail, outcome=outcome, by=caller_id)
        return (outcome, actor.id, detail)
