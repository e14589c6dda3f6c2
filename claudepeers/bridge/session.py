"""One bridge process: the agent's MCP session, the broker link, and the inbox between them.

Started by :mod:`.main` once the ``initialize`` answer is out. It registers in the
background, shows pushed messages as channel notifications (push mode) or at the end of
tool results (inline mode), and stops the reactor when stdin ends, when the agent process
ends, or when stdout breaks.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any, Mapping

from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from claudepeers.common import agents, gitinfo
from claudepeers.common.render import render_batch, render_message
from claudepeers.common.settings import Settings
from claudepeers.wire import commands as wire

from claudepeers.bridge import agentwatch, codexproc, codexwatch, handshake, transcript
from claudepeers.bridge.channel import ChannelConfirmations, describe
from claudepeers.bridge.connection import AsyncBroker, BrokerLink
from claudepeers.bridge.delivery import Inbox, Offer
from claudepeers.bridge.handshake import FirstMessage
from claudepeers.bridge.permissions import PermissionRelay
from claudepeers.bridge.processes import DaemonThreadPool, agent_terminal, newer_sibling, parent_process
from claudepeers.bridge.pushing import ChannelPushing
from claudepeers.bridge.server import McpPipe, build_server
from claudepeers.bridge.stdio import LineReader, LineWriter
from claudepeers.bridge.broker_calls import BrokerUnreachable, ToolResult
from claudepeers.bridge.tools import PeerTools
from claudepeers.bridge.tools_threads import ThreadTools
from claudepeers.bridge.wake import Waker, codex_queue

#: Messages appended to a tool result: few and short, so the agent's work goes on.
FOOTER_MESSAGES = 5
FOOTER_CHARS = 8_000
#: check_messages shows mail "in full", within what an agent takes in one tool result
#: (Claude Code cuts MCP results of about 25,000 tokens); a 32 KiB body always fits.
CHECK_MESSAGES = 50
CHECK_CHARS = 60_000
#: After stdin ends, answers to requests already read may still go out for this long.
EOF_GRACE_SECONDS = 0.3


class Bridge(ChannelPushing):
    """Everything one ``claude-peers mcp`` process does, wired together."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        settings: Settings,
        agent: agents.AgentProcess | None,
        client_type: str,
        delivery: str,
        instructions: str,
        first: FirstMessage | None,
        answered_first: bool,
        pending: bytes,
        stdout_fd: int,
        stdin_fd: int = 0,
        cwd: str | None = None,
        era: str | None = None,
        server_name: str = handshake.IMPLEMENTATION_NAME,
        confirm: bool = True,
        environ: Mapping[str, str] | None = None,
        permissions: bool = False,
    ) -> None:
        self._reactor = reactor
        self._settings = settings
        self.agent = agent
        self.client_type = client_type
        self.delivery = delivery
        self._first = first
        self._answered_first = answered_first
        self._pending = pending
        self._stdin_fd = stdin_fd
        self._cwd = cwd or os.getcwd()
        # Push mode waits for "initialized" before it shows anything; a session that
        # opened without the handshake has nothing to wait for.
        ready = delivery != "push" or not answered_first
        self.inbox = Inbox(mode=delivery, measure=lambda message: len(render_message(message)), ready=ready)
        #: The MCP protocol version the agent negotiated (reported in the delivery description).
        self.era = era
        # A detected channel is only a try: each push waits for the agent's transcript to
        # show it (a --delivery push forced by the user is taken on trust).
        self.channel: ChannelConfirmations | None = None
        self.transcript: transcript.TranscriptWatch | None = None
        if delivery == "push" and confirm:
            self.channel = ChannelConfirmations(
                reactor, settings.limits.channel_confirm_seconds, self._channel_state,
                first_bound=settings.limits.channel_first_confirm_seconds,
                slow_start=lambda: self.transcript is not None and not self.transcript.exists(),
            )
            environ = os.environ if environ is None else environ
            self.transcript = transcript.TranscriptWatch(
                reactor, transcript.config_dir(environ), self._cwd, agent.pid if agent is not None else None,
                server_name, self._seen, environ=environ, on_history=self._seen_before,
            )
        self.writer = LineWriter(reactor, stdout_fd, on_broken=lambda: self.stop("stdout closed"))
        # Blocking work (git, starting a broker) runs in threads of our own: the
        # reactor's pool is joined at shutdown, and a hanging git must not delay our exit.
        self._threads = DaemonThreadPool(0, 4, "claude-peers-bridge")
        # Interactive Codex runs all its threads in one app-server: the peer is our thread,
        # named by the first tool call; until then we have no session to register.
        self.threads = agent is not None and agent.runs_threads
        self.thread_id: str | None = None
        self.codex: codexproc.CodexHost | None = None
        self.tui: codexwatch.TuiWatch | None = None
        self.waker: Waker | None = None
        self.link = BrokerLink(
            reactor, settings, self._registration, self._deliver, self._registered, self._shown_elsewhere,
            self._connection_lost, in_thread=self._in_thread, on_superseded=self._superseded,
        )
        self.tools = PeerTools(AsyncBroker(self.link), self._check_messages, [ThreadTools(self.link, self.inbox, self._shown)])
        relay = PermissionRelay(self.link.call, self.writer, self.transcript) if permissions else None
        self.permissions = self.link.permissions = relay  # the broker's PermissionAnswer comes by the link
        server, options = build_server(instructions, self._call_tool, self._initialized, permissions)
        self.pipe = McpPipe(server, options, self.writer, self._call_tool, on_modern=self._modern_era,
                            on_thread=self._thread_seen, on_permission_request=relay.requested if relay else None)
        self._stopping = False
        self._watches: list[Any] = []
        self._task: asyncio.Future | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Serve the agent, connect to the broker, and watch the agent process."""
        self._threads.start()
        if self.transcript is not None:
            self.transcript.start()
        self._task = asyncio.ensure_future(self.pipe.run())
        self._task.add_done_callback(self._served)
        if self._first is not None:
            if self._answered_first and self._first.request is not None:
                self.pipe.already_answered(self._first.request["id"])
            self.pipe.feed(self._first.line)
        LineReader(self._reactor, self._stdin_fd, self.pipe.feed, self._stdin_ended, self._pending,
                   on_too_long=self.pipe.line_too_long).start()
        if not self.threads:
            self.link.start()
        if self.agent is not None:
            self._watches.append(agentwatch.watch_exit(
                self._reactor, self.agent.pid, self.agent.start, lambda: self.stop("the agent process ended")
            ))
        parent = parent_process()
        if parent is not None and (self.agent is None or parent[0] != self.agent.pid):
            self._watches.append(agentwatch.watch_exit(
                self._reactor, *parent, lambda: self.stop("our parent process ended (re-parented)")
            ))
        if agentwatch.HangupWatch.applies_to(self.writer.fileno()):
            agentwatch.HangupWatch(self._reactor, self.writer.fileno(), lambda: self.stop("stdout closed")).start()

    def stop(self, why: str) -> None:
        """Stop the process soon (the entry point flushes stdout and exits)."""
        if self._stopping:
            return
        self._stopping = True
        self.log.info("bridge stopping: {why}", why=why)
        if self._reactor.running:
            self._reactor.stop()

    def finish(self) -> None:
        """After the reactor stopped: get the last lines out to the agent."""
        self.writer.flush_blocking(0.3)

    def _stdin_ended(self) -> None:
        """The agent closed stdin: let the SDK answer what it already read, briefly."""
        self.pipe.feed_eof()
        self._reactor.callLater(EOF_GRACE_SECONDS, self.stop, "stdin closed")

    def _served(self, task: asyncio.Future) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error("MCP server error: {error!r}", error=task.exception())
        self.stop("the MCP session ended")

    # --- registration ------------------------------------------------------------------

    def _in_thread(self, function: Any, *args: Any) -> Any:
        """Run blocking ``function`` in one of our threads (never joined: we leave by _exit)."""
        return deferToThreadPool(self._reactor, self._threads, function, *args)

    def _registration(self) -> Any:
        """The Register arguments; git and the tty are looked up off the reactor thread."""
        return self._in_thread(self._describe)

    def _thread_seen(self, thread_id: str) -> None:
        """A tool call named our thread: bind to it (once) and register as its peer."""
        if not self.threads or self.thread_id is not None:
            if self.thread_id not in (None, thread_id):
                self.log.warn("tool call of thread {other} in the bridge of thread {ours}", other=thread_id,
                              ours=self.thread_id)
            return
        self.thread_id = thread_id
        self.log.info("bound to Codex thread {thread}", thread=thread_id)
        self.link.start()

    def _describe(self) -> dict[str, Any]:
        agent = self.agent or agents.describe(os.getpid())
        assert agent is not None
        repo = gitinfo.repo_info(self._cwd)
        if self.thread_id is not None and self.codex is None:
            self.codex = codexproc.host_of(agent, self.thread_id)  # off the reactor thread: it scans processes
            if self.codex is not None:
                self.tui = codexwatch.TuiWatch(self._reactor, self._in_thread, agent, self.thread_id, self.codex,
                                               lambda: self.stop("the Codex TUI that showed our thread exited"))
                run = codex_queue(self._reactor, self.codex.binary, self.codex.env, self.thread_id, self.log)
                self.waker = Waker(self._reactor, run, self.tui.present)
                self._reactor.callFromThread(self.tui.start)
        described = {
            "agent_pid": agent.pid,
            "agent_start": agent.start,
            "client_type": self.client_type,
            "cwd": self._cwd,
            "git_root": repo.root,
            "git_common_dir": repo.common_dir,
            "branch": repo.branch,
            "repo_id": repo.repo_id,
            "tty": agent_terminal(agent.pid),
            "name": self._settings.peer_name,
            "delivery": self.delivery_description(),
        }
        if self.thread_id is not None:
            described["thread_id"] = self.thread_id
        return described

    def delivery_description(self) -> str:
        """How this agent gets its mail now, with the MCP era it negotiated (for the broker)."""
        return describe(self.channel, self.delivery, self.era)

    def _report_delivery(self) -> None:
        """Tell the broker how mail reaches us now (registration tells it on every connect)."""
        if self.link.current is None:
            return
        d = self.link.call(wire.SetDelivery, delivery=self.delivery_description())
        d.addErrback(lambda failure: self.log.warn("could not report the delivery: {f}", f=failure.getErrorMessage()))

    def _superseded(self, reason: str) -> None:
        """The broker says a newer bridge of our agent session took over: exit."""
        self.log.warn("the broker handed our session to a newer bridge ({reason}); exiting", reason=reason)
        self.link.stop()
        self.stop("replaced by a newer bridge of the same agent session")

    def _connection_lost(self) -> None:
        """The broker dropped us. If a newer bridge of our agent took over, make way."""
        if self.threads:
            return  # the other bridges under our app-server serve other threads
        newer = newer_sibling(self.agent)
        if newer is not None:
            self.log.warn(
                "a newer claude-peers bridge of the same agent session (pid {pid}) took over; exiting",
                pid=newer,
            )
            self.link.stop()
            self.stop("replaced by a newer bridge of the same agent session")

    def _registered(self, answer: Mapping[str, Any]) -> None:
        self.log.info("peer {peer_id} ({name}) ready", peer_id=answer["peer_id"], name=answer["name"])
        if self.permissions is not None:
            self.permissions.registered()

    # --- showing messages ----------------------------------------------------------------

    def _deliver(self, message: dict[str, Any]) -> Any:
        """The broker pushed a message: True when the agent has seen it (now or before).

        "Seen" means in the agent's stdin pipe for a trusted (forced) push, and confirmed
        in the agent's transcript for a detected channel: the answer waits for it, at
        most the confirmation bound.
        """
        offer = self.inbox.offer(message)
        if offer is Offer.ALREADY_SHOWN:
            return True
        message_id = int(message["id"])
        if offer is Offer.PENDING and self.channel is not None:
            return self.channel.wait_for(message_id, self._not_confirmed)
        if offer is Offer.SHOW:
            return self._push(message)
        if self.inbox.mode == "push" and self.inbox.ready:
            # Older mail waits (fetched by check_messages, or held before "initialized"):
            # push it all now, in order, rather than leave it for the next tool result.
            answer: Any = False
            for held in self.inbox.take_ready():
                result = self._push(held)
                if int(held["id"]) == message_id:
                    answer = result
                else:
                    self._acknowledge_when_shown(int(held["id"]), result)
            return answer
        if self.waker is not None:
            return self.waker.wake(message)
        return False

    def _initialized(self, protocol_version: str | None = None) -> None:
        """The agent finished the handshake: push mode may show what it held."""
        if protocol_version is not None:
            self.pipe.session_initialized(protocol_version)
            if protocol_version != self.era:
                self.era = protocol_version
                self._report_delivery()
        if self.inbox.ready:
            return
        self.inbox.ready = True
        for message in self.inbox.take_ready():
            self._acknowledge_when_shown(int(message["id"]), self._push(message))

    async def _call_tool(self, name: str, arguments: Mapping[str, Any] | None) -> ToolResult:
        """Run a tool, then append waiting messages (bounded) to its result."""
        result = await self.tools.call(name, arguments)
        if name == "check_messages":
            return result
        batch = self.inbox.take(FOOTER_MESSAGES, FOOTER_CHARS)
        if not batch.messages and not batch.remaining:
            return result
        footer = render_batch(batch.messages, batch.remaining, "call check_messages to read them")
        self._shown(batch.ids)
        text = result.text + "\n\n--- new messages from other agents ---\n" + footer
        return ToolResult(text, result.is_error)

    async def _check_messages(self) -> str:
        """Everything waiting, in full: what the broker holds for us and what we hold."""
        more = 0
        note = ""
        try:
            answer = await self.tools_broker_call(wire.FetchUnread, limit=CHECK_MESSAGES)
        except (BrokerUnreachable, wire.PeersError) as error:
            note = f"\n(The broker is not reachable ({error}); showing what this bridge holds.)"
        else:
            for message in answer["messages"]:
                self.inbox.hold(message)
            more = int(answer.get("more") or 0)
        batch = self.inbox.take(CHECK_MESSAGES, CHECK_CHARS)
        if not batch.messages and batch.remaining:
            # One message larger than the bound (a raised body limit): show it whole.
            batch = self.inbox.take(1, sys.maxsize)
        if not batch.messages:
            return "No new messages." + note
        text = render_batch(batch.messages, max(batch.remaining, more), "call check_messages again")
        self._shown(batch.ids)
        count = len(batch.messages)
        return f"{count} new message{'s' if count != 1 else ''}:\n\n" + text + note

    async def tools_broker_call(self, command: type, **arguments: Any) -> dict[str, Any]:
        """A broker call from asyncio code (used by check_messages)."""
        return await AsyncBroker(self.link).call(command, **arguments)

    def _shown(self, ids: list[int]) -> None:
        """These messages are in a tool result now: never again, and tell the broker."""
        if not ids:
            return
        self.inbox.mark_shown(ids)
        self.link.acknowledge(ids)
        if self.waker is not None:
            self.waker.shown(ids)

    def _shown_elsewhere(self, ids: list[int]) -> None:
        """A prompt hook of our session showed these (perhaps in the turn we woke)."""
        self.inbox.mark_shown(ids)
        if self.waker is not None:
            self.waker.shown(ids)
