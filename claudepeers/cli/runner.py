"""Running one command against the broker: settings, connection, errors, exit status.

The reactor is imported inside :func:`run_with_broker` only, so that importing any
command module stays reactor-free.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Awaitable, Callable

from claudepeers.cli.main import EXIT_FAILED, EXIT_NO_BROKER, EXIT_PERMISSION, EXIT_USAGE, error

def print_json(value: Any) -> None:
    """Print ``value`` as indented, key-sorted JSON on stdout."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def error_text(exc: BaseException) -> str:
    """The human text of an exception, decoding AMP's bytes descriptions."""
    args = getattr(exc, "args", ())
    if len(args) == 1 and isinstance(args[0], bytes):
        return args[0].decode("utf-8", "replace")
    text = str(exc)
    return text or type(exc).__name__


def describe_failure(exc: BaseException) -> tuple[str, int]:
    """One line and an exit status for anything a broker command can fail with."""
    from twisted.internet.error import ConnectionDone, ConnectionLost
    from twisted.protocols import amp

    from claudepeers.wire import commands as wire
    from claudepeers.common.client import BrokerNotRunning
    from claudepeers.common.settings import SettingError

    if isinstance(exc, BrokerNotRunning):
        text = error_text(exc)
        status = EXIT_PERMISSION if "permission denied" in text.lower() else EXIT_NO_BROKER
        return text, status
    if isinstance(exc, (wire.PermissionDenied, wire.AuthenticationRequired)):
        return f"permission denied: {error_text(exc)}", EXIT_PERMISSION
    if isinstance(exc, SettingError):
        return error_text(exc), EXIT_USAGE
    if isinstance(exc, wire.PeersError):
        return error_text(exc), EXIT_FAILED
    if isinstance(exc, (ConnectionDone, ConnectionLost)):
        return "the broker closed the connection", EXIT_FAILED
    if isinstance(exc, amp.TooLong):
        what = (exc.keyName or b"a value").decode("ascii", "replace").split(".")[0]
        return f"{what} is too long for the wire (one value is at most {amp.MAX_VALUE_LENGTH:,} bytes)", EXIT_USAGE
    if isinstance(exc, amp.UnhandledCommand):
        return f"the broker does not know this command (version skew?): {error_text(exc)}", EXIT_FAILED
    if isinstance(exc, amp.UnknownRemoteError):
        return f"the broker answered with an error: {error_text(exc)}", EXIT_FAILED
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc}", EXIT_PERMISSION
    return f"{type(exc).__name__}: {error_text(exc)}", EXIT_FAILED


def load_settings() -> Any:
    """Settings from the environment (raises SettingError on a bad value)."""
    from claudepeers.common.settings import Settings

    return Settings.from_env()


Body = Callable[[Any, Any, Any], Awaitable[int | None]]


def run_with_broker(
    body: Body, *, autostart: bool = False, locator: Any = None, interrupted_status: int = 130
) -> int:
    """Connect to the broker, run ``await body(reactor, protocol, settings)``, return the status.

    ``autostart`` allows starting a broker when none answers (still subject to
    ``CLAUDE_PEERS_NO_AUTOSTART``). Every failure becomes one line on stderr. When the
    reactor stops before the body ends (Ctrl-C), the status is ``interrupted_status``.
    """
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred

    from claudepeers.common.client import connect
    from claudepeers.common.settings import SettingError

    try:
        settings = load_settings()
    except SettingError as exc:
        return error(str(exc), EXIT_USAGE)
    outcome: dict[str, int] = {}

    async def go(reactor: Any) -> None:
        try:
            protocol = await connect(reactor, settings, locator=locator, autostart=autostart)
            try:
                outcome["status"] = int(await body(reactor, protocol, settings) or 0)
            finally:
                if protocol.transport is not None:
                    protocol.transport.loseConnection()
        except Exception as exc:  # every failure is reported as one line
            text, status = describe_failure(exc)
            outcome["status"] = error(text, status)

    try:
        task.react(lambda reactor: ensureDeferred(go(reactor)))
    except SystemExit:
        pass
    return outcome.get("status", interrupted_status)


def call_once(settings: Any, command: Any, **arguments: Any) -> Any:
    """One broker command in a short reactor run (never autostarting): the answer, or the exception.

    For commands that otherwise need no reactor (doctor, manhole). The reactor cannot be
    restarted, so a process calls this at most once.
    """
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred

    from claudepeers.common.client import connect

    result: dict[str, Any] = {}

    async def go(reactor: Any) -> None:
        try:
            protocol = await connect(reactor, settings, autostart=False)
            try:
                result["answer"] = await protocol.callRemote(command, **arguments)
            finally:
                protocol.transport.loseConnection()
        except Exception as exc:
            result["answer"] = exc

    try:
        task.react(lambda reactor: ensureDeferred(go(reactor)))
    except SystemExit:
        pass
    return result.get("answer", RuntimeError("no answer from the broker"))


def call_in_turn(settings: Any, commands: list[Any]) -> list[Any]:
    """Several argument-less broker commands on one connection in one reactor run (never
    autostarting): each answer, or the exception that ended the run, in order.

    Like :func:`call_once`, at most once per process (the reactor cannot be restarted).
    """
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred

    from claudepeers.common.client import connect

    answers: list[Any] = []

    async def go(reactor: Any) -> None:
        try:
            protocol = await connect(reactor, settings, autostart=False)
            try:
                for command in commands:
                    answers.append(await protocol.callRemote(command))
            finally:
                protocol.transport.loseConnection()
        except Exception as exc:
            answers.append(exc)

    try:
        task.react(lambda reactor: ensureDeferred(go(reactor)))
    except SystemExit:
        pass
    failure = answers[-1] if answers and isinstance(answers[-1], Exception) else RuntimeError("no answer from the broker")
    return answers + [failure] * (len(commands) - len(answers))
