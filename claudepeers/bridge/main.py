"""``claude-peers mcp``: the entry point of the MCP bridge.

Order matters here, for speed and for stdout:

1. parse options and settings, find the agent session (cheap: no Twisted reactor, no SDK);
2. read the agent's first line and answer ``initialize`` at once (:mod:`.handshake`);
3. install the asyncio reactor, import the SDK, move stdout out of reach of stray prints;
4. run the reactor; when it stops, flush the last lines and leave with ``os._exit``, on
   every path (:mod:`.lifecycle` says why).

Nothing but MCP is ever written to stdout; logs go to stderr (CLAUDE_PEERS_LOG_LEVEL).
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from twisted.python import usage

from claudepeers.common import agents
from claudepeers.common.settings import SettingError, Settings

from claudepeers.bridge import handshake, lifecycle


class BridgeOptions(usage.Options):
    """Options of ``claude-peers mcp``."""

    synopsis = "Usage: claude-peers mcp [options]"
    longdesc = "Run the MCP stdio server of one agent session (started by Claude Code or Codex)."
    optParameters = [
        [
            "client-type",
            None,
            None,
            "claude-code, codex or unknown; used when neither the agent's initialize request "
            "nor the process tree tells",
        ],
        [
            "delivery",
            None,
            None,
            "push (channel notifications) or inline (in tool results): force how messages are "
            "shown [setting CLAUDE_PEERS_DELIVERY; default: detect]",
        ],
        [
            "server-name",
            None,
            None,
            "this server's name in the agent's MCP configuration, as named by the channels flag "
            "[setting CLAUDE_PEERS_SERVER_NAME; default claude-peers]",
        ],
    ]

    def opt_version(self) -> None:
        """Print the version and exit."""
        from claudepeers import __version__

        print(f"claude-peers {__version__}")
        sys.exit(0)

    def postOptions(self) -> None:  # noqa: N802 - Twisted's name
        """Fill from the environment, then check the values."""
        env = os.environ
        if self["delivery"] is None:
            self["delivery"] = env.get("CLAUDE_PEERS_DELIVERY") or None
        if self["server-name"] is None:
            self["server-name"] = env.get("CLAUDE_PEERS_SERVER_NAME") or "claude-peers"
        delivery = self["delivery"]
        if delivery is not None and delivery not in (*handshake.DELIVERY_MODES, "auto"):
            raise usage.UsageError(f"--delivery (or CLAUDE_PEERS_DELIVERY) must be push or inline, not {delivery!r}")
        if delivery == "auto":
            self["delivery"] = None
        client_type = self["client-type"]
        if client_type is not None and client_type not in handshake.CLIENT_TYPES:
            raise usage.UsageError(f"--client-type must be one of {', '.join(handshake.CLIENT_TYPES)}")


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the bridge until stdin ends, the agent dies, or SIGTERM; never returns.

    Every way out goes through :func:`.lifecycle.leave` (``os._exit``): an exception that
    escaped to the interpreter's shutdown would wait there for our pool's threads.
    """
    lifecycle.ensure_standard_fds()
    code = 1
    try:
        code = _main(sys.argv[1:] if argv is None else argv)
    except SystemExit as exit_:  # --help, --version
        code = exit_.code if isinstance(exit_.code, int) else 0
    except BaseException:
        _report_crash()
    lifecycle.leave(code)


def _report_crash() -> None:
    """The traceback on stderr, if stderr takes it (never raises: we must reach _exit)."""
    try:
        import traceback

        traceback.print_exc()
    except BaseException:
        pass


def _main(argv: list[str]) -> int:
    """Parse, answer the handshake, run; the exit status."""
    options = BridgeOptions()
    try:
        options.parseOptions(argv)
        settings = Settings.from_env()
    except (usage.UsageError, SettingError) as error:
        sys.stderr.write(f"claude-peers mcp: {error}\n")
        return 2

    agent = agents.session_of(os.getpid())
    line, pending = handshake.read_first_line(0)
    first = handshake.parse_first(line) if line is not None else None
    if first is not None and first.is_discover and handshake.CHANNELS_NEED_CLASSIC_ERA:
        # Refused, Claude Code falls back to initialize (and registers our channel); a
        # client of the 2026 era alone goes on with enveloped requests, which the SDK serves.
        assert first.request is not None
        handshake.write_all(1, handshake.discover_refusal(first.request))
        line, pending = handshake.read_first_line(0, pending)
        first = handshake.parse_first(line) if line is not None else None
    if line is None and not pending:
        return 0  # the agent left before saying anything
    client_type = handshake.client_type_of(
        first.client_name if first else None,
        agent.client_type if agent is not None else None,
        options["client-type"],
    )
    server_name = options["server-name"]
    channels = agent is not None and agent.client_type == "claude-code" and agent.channels_enabled(server_name)
    delivery = handshake.delivery_of(options["delivery"], client_type, channels)
    instructions = handshake.instructions_for(delivery, server_name)
    answered = first is not None and first.is_initialize
    era = None
    if answered:
        assert first is not None and first.request is not None
        try:
            handshake.write_all(1, handshake.initialize_answer(first.request, instructions))
        except OSError:
            return 0  # the agent closed our stdout: nobody is left to serve
        era = handshake.initialize_result(first.request, instructions)["protocolVersion"]
    return _run(settings, agent, client_type, delivery, instructions, first, answered, pending,
                era, server_name, options["delivery"] != "push")


def _run(
    settings: Settings,
    agent: agents.AgentProcess | None,
    client_type: str,
    delivery: str,
    instructions: str,
    first: handshake.FirstMessage | None,
    answered: bool,
    pending: bytes,
    era: str | None,
    server_name: str,
    confirm: bool,
) -> int:
    """Everything after the handshake: the reactor, the SDK server, the broker link."""
    import asyncio
    import gc

    # Importing the SDK builds tens of thousands of pydantic objects that all live as long
    # as the process; the collector, run every few hundred allocations meanwhile, would walk
    # them again and again for nothing (2 to 5% of the start's CPU time). On again below.
    gc.disable()

    from twisted.internet import asyncioreactor

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
    from twisted.internet import reactor

    from claudepeers.bridge.stdio import claim_stdout

    stdout_fd = claim_stdout()
    _start_logging(settings)

    from claudepeers.bridge.session import Bridge

    bridge = Bridge(
        reactor,
        settings,
        agent,
        client_type,
        delivery,
        instructions,
        first,
        answered,
        pending if first is not None else b"",
        stdout_fd,
        era=era,
        server_name=server_name,
        confirm=confirm,
    )
    bridge.log.info(
        "claude-peers mcp {pid}: client {client}, delivery {delivery}, agent {agent}",
        pid=os.getpid(),
        client=client_type,
        delivery=delivery,
        agent=agent,
    )
    reactor.callWhenRunning(bridge.start)
    # However the reactor is stopped (SIGTERM, stdin's end, the agent's), we are gone soon.
    reactor.addSystemEventTrigger("before", "shutdown", lifecycle.arm_exit_deadline)
    # What exists now (the SDK, pydantic's schemas, Twisted: some 100,000 objects) lives
    # as long as the process. Left to the collector, every full collection walks it all,
    # about 60 ms on a small machine, in the middle of a burst of tool calls; frozen, it
    # is never scanned again. (There is next to no garbage to leave behind here.)
    gc.freeze()
    gc.enable()
    reactor.run()
    bridge.finish()
    return 0


def _start_logging(settings: Settings) -> None:
    """Log to stderr (the agent keeps it); never touch stdout (redirectStandardIO=False)."""
    from twisted.logger import (
        FilteringLogObserver,
        InvalidLogLevelError,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    try:
        level = LogLevel.levelWithName(os.environ.get("CLAUDE_PEERS_LOG_LEVEL", "info").lower())
    except InvalidLogLevelError:
        level = LogLevel.info
    # Never blocking: a stderr nobody reads (or a closed one) drops lines, it never stops us.
    observer = FilteringLogObserver(textFileLogObserver(lifecycle.StderrSink()), [LogLevelFilterPredicate(level)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


if __name__ == "__main__":
    main()
