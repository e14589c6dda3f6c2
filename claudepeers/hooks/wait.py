"""``claude-peers hook wait``: wake an idle Claude Code with its peer mail (an ``asyncRewake`` hook).

Claude Code runs this command in the background at SessionStart, UserPromptSubmit and
every Stop, with ``"asyncRewake": true``: when it exits 2, the idle session wakes with its
stderr as a new user block (``rewakeMessage`` in the settings is the prefix the model
sees, ``rewakeSummary`` the line the person sees; the hook's own output may set the
summary only for official plugins, so ours is fixed in the settings). One run:

1. finds the agent session above this process, as the prompt hook does; in ``-p`` mode,
   where an asyncRewake hook blocks the session like a normal hook, it exits 0 at once;
2. connects to the broker (never starting one) and ``Attach``es to the session's peer,
   retrying for a few seconds while its bridge has not registered yet (at SessionStart
   the two start together);
3. sends ``WaitForMail`` and waits, without polling, on two descriptors: the broker's
   socket and a pidfd of the agent process. It exits 0 when the agent ends, when a newer
   waiter of the same session replaced it, when the broker goes away, and shortly before
   the hook timeout (the next turn's Stop hook starts a new one);
4. when mail comes, prints the framed messages (bounded, as the prompt hook frames them)
   to stderr, acknowledges exactly those with ``how="woke"`` (their senders hear
   ``woke``; the broker tells the bridge ``ShownElsewhere``, so it never shows them
   again), and exits 2.

Errors go to ``hooks.log`` as for the prompt hook; they never wake the agent (exit 0).
"""

from __future__ import annotations

import os
import select
import sys
import time
from typing import Any, Callable, Mapping, TextIO

from claudepeers.common import agents
from claudepeers.wire.box import floating, integer, integer_list, json_value, text
from claudepeers.hooks import output
from claudepeers.hooks.amp_socket import AmpError, AmpSocket, BrokerUnreachable
from claudepeers.hooks.config import REWAKE_TIMEOUT
from claudepeers.hooks.link import PAGE, connect, log_path, read_payload, write_log
from claudepeers.common.settings import Settings

#: The waiter gives up this long before Claude Code's timeout would SIGTERM it.
TIMEOUT_MARGIN = 30.0
#: How long the waiter looks for its peer while the bridge has not registered yet.
REGISTRATION_WAIT = 20.0
REGISTRATION_RETRY = 0.25
#: Exit status that makes Claude Code wake the session with our stderr.
WAKE = 2
#: Where the agent was started in print mode (asyncRewake hooks block there).
PRINT_FLAGS = ("-p", "--print")


def wait_seconds() -> float:
    """How long one waiter waits: up to the hook timeout (``CLAUDE_PEERS_REWAKE_SECONDS`` for tests)."""
    configured = os.environ.get("CLAUDE_PEERS_REWAKE_SECONDS")
    if configured:
        return max(0.0, float(configured))
    return REWAKE_TIMEOUT - TIMEOUT_MARGIN


class AgentExit:
    """The agent process as a descriptor that becomes readable when it ends (a pidfd)."""

    def __init__(self, agent: agents.AgentProcess) -> None:
        """Open a pidfd for the agent (None where pidfds are unavailable: checked each second)."""
        self._agent = agent
        try:
            self.fd: int | None = os.pidfd_open(agent.pid)
        except (AttributeError, OSError):
            self.fd = None

    def ended(self) -> bool:
        """Whether the agent process (pid + start time) has ended."""
        return not agents.is_alive(self._agent.pid, self._agent.start)

    def close(self) -> None:
        """Close the pidfd."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def sleep_unless_ended(agent: AgentExit, seconds: float, sock: Any = None) -> str:
    """Wait up to ``seconds`` for the socket to be readable or the agent to end.

    Returns ``readable``, ``ended`` or ``timeout``. The kernel wakes us (poll on the socket
    and the pidfd); without a pidfd the agent is checked once a second.
    """
    deadline = time.monotonic() + seconds
    poller = select.poll()
    if sock is not None:
        poller.register(sock.fileno(), select.POLLIN)
    if agent.fd is not None:
        poller.register(agent.fd, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout"
        slice_ = left if agent.fd is not None else min(left, 1.0)
        events = poller.poll(int(slice_ * 1000) + 1)
        if agent.fd is not None and any(fd == agent.fd for fd, _ in events):
            return "ended"
        if events:
            return "readable"
        if agent.fd is None and agent.ended():
            return "ended"


def attach(sock: AmpSocket, agent: agents.AgentProcess, watch: AgentExit, first_calls: list) -> Any:
    """Attach to the agent session's peer; None when it has none (or the agent ended)."""
    arguments = [(b"agent_pid", integer(agent.pid)), (b"agent_start", floating(agent.start))]
    tags = sock.send([*first_calls, ("Attach", arguments)])
    for tag in tags[:-1]:
        sock.answer(tag)
    tag = tags[-1]
    give_up = time.monotonic() + REGISTRATION_WAIT
    while True:
        try:
            return sock.answer(tag)
        except AmpError as error:
            if error.code != "UNKNOWN_PEER" or time.monotonic() >= give_up:
                if error.code == "UNKNOWN_PEER":
                    return None
                raise
        # The bridge registers while the session starts: look again shortly.
        if sleep_unless_ended(watch, REGISTRATION_RETRY) == "ended":
            return None
        (tag,) = sock.send([("Attach", arguments)])


def run(payload: Mapping[str, Any], settings: Settings, stderr: TextIO, note: Callable[[str], None],
        seconds: float) -> int:
    """One waiter; returns the exit status (WAKE after printing mail). Raises on failure."""
    agent = agents.session_of(os.getpid())
    if agent is None:
        note("no agent session above this process")
        return 0
    if any(arg in PRINT_FLAGS for arg in agent.argv[1:]):
        return 0  # print mode runs asyncRewake hooks in the foreground: never hold it up
    watch = AgentExit(agent)
    try:
        sock, first_calls = connect(settings)
        try:
            return _wait(sock, first_calls, agent, watch, stderr, note, seconds)
        finally:
            sock.close()
    finally:
        watch.close()


def _wait(sock: AmpSocket, first_calls: list, agent: agents.AgentProcess, watch: AgentExit,
          stderr: TextIO, note: Callable[[str], None], seconds: float) -> int:
    started = time.monotonic()
    attached = attach(sock, agent, watch, first_calls)
    if attached is None:
        return 0
    (tag,) = sock.send([("WaitForMail", [(b"limit", integer(PAGE))])])
    left = seconds - (time.monotonic() - started)
    if sleep_unless_ended(watch, left, sock) != "readable":
        return 0  # the agent ended, or our time is up: the next turn's Stop hook waits again
    # The answer is on its way; read it with the usual per-call timeout.
    answer = sock.answer(tag)
    if answer[b"outcome"] != text("mail"):
        return 0  # replaced by a newer waiter of this session, or the session ended
    selection = output.select(json_value(answer, b"messages"), int(answer[b"more"]))
    if not selection.text:
        return 0
    stderr.write(selection.text + "\n")
    stderr.flush()
    peer = attached.get(b"peer_id", b"?").decode()
    if selection.ids:
        try:
            sock.call("Acknowledge", [(b"message_ids", integer_list(selection.ids)), (b"how", text("woke"))])
        except (AmpError, BrokerUnreachable) as error:
            note(f"woke the agent with messages {selection.ids} but could not acknowledge them "
                 f"(they may be shown once more): {error}")
            return WAKE
    note(f"woke peer {peer} with messages {selection.ids}")
    return WAKE


def main(argv: list[str] | None = None, stdin: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """``claude-peers hook wait``: 2 after printing mail to stderr, else 0 (errors are logged)."""
    stdin = sys.stdin if stdin is None else stdin
    stderr = sys.stderr if stderr is None else stderr
    settings: Settings | None = None
    event = "wait"
    try:
        settings = Settings.from_env()
        payload = read_payload(stdin)
        event = f"wait {payload.get('hook_event_name') or '?'}"
        path = log_path(settings)
        status = run(payload, settings, stderr, lambda line: write_log(path, event, line), wait_seconds())
        if status == WAKE and stderr is sys.stderr:
            # Claude Code wakes the session when we exit: skip the interpreter's teardown.
            sys.stderr.flush()
            os._exit(WAKE)
        return status
    except BrokerUnreachable as error:
        write_log(log_path(settings), event, f"{error} (mail waits for the next hook or tool call)")
    except AmpError as error:
        write_log(log_path(settings), event, f"the broker refused: {error}")
    except Exception as error:  # never wake the agent with a traceback
        write_log(log_path(settings), event, f"internal error: {type(error).__name__}: {error}")
    return 0

