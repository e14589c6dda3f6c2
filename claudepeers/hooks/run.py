"""``claude-peers hook <event>``: show this agent session's unread peer mail through the agent's hook.

Claude Code and Codex run the command at fixed moments (``SessionStart``,
``UserPromptSubmit``, and ``Stop`` when the stop guard is installed), with the event's
JSON on stdin, as a descendant of the agent process. One run:

1. finds the agent session above this process (:func:`claudepeers.common.agents.session_of`);
2. connects to the broker, never starting one, and pipelines ``Attach`` (the broker checks
   from the kernel that the agent is our ancestor), ``Whoami`` and ``FetchUnread``: one
   round trip;
3. prints nothing when the peer's bridge is online in push mode (the channel shows each
   message at once) or when there is no mail;
4. otherwise prints the framed messages in the agent's hook output, flushes, and only then
   acknowledges exactly the messages it printed. The broker tells the peer's bridge
   (``ShownElsewhere``), which drops its held copies, so no message is shown twice.

It never fails the agent's turn: any error is one line in ``hooks.log`` next to the
broker's socket (``~/.claude/run/hooks.log``), nothing on stdout, and exit status 0.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any, Callable, Mapping, TextIO

from claudepeers.common import agents
from claudepeers.wire.box import floating, integer, integer_list, json_value, read_boolean, text
from claudepeers.hooks import output
from claudepeers.hooks.amp_socket import AmpError, BrokerUnreachable
from claudepeers.hooks.link import PAGE, connect, log_path, read_payload, write_log
from claudepeers.common.settings import Settings

USAGE = ("usage: claude-peers hook <SessionStart|UserPromptSubmit|Stop>  (the hook's JSON on stdin)\n"
         "       claude-peers hook wait  (Claude Code's asyncRewake hook: wakes the idle session with its mail)")
#: The argument that runs the rewake waiter (:mod:`.wait`) instead of a prompt hook.
WAIT_MODE = "wait"


class StopCounter:
    """How often the stop guard blocked in the current turn of one agent session (a tiny file)."""

    def __init__(self, settings: Settings, payload: Mapping[str, Any], agent_pid: int) -> None:
        """The counter of the session named in ``payload`` (else of the agent process)."""
        session = str(payload.get("session_id") or f"pid-{agent_pid}")
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", session)[:120]
        self.path = settings.run_dir / "hook-state" / f"stop-{safe}.json"
        self.turn = str(payload.get("turn_id") or "")

    def blocks(self) -> int:
        """Blocks so far in this turn (a new Codex turn id starts again from 0)."""
        try:
            state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return 0
        if not isinstance(state, dict) or state.get("turn", "") != self.turn:
            return 0
        return int(state.get("blocks", 0))

    def record_block(self) -> None:
        """One more block in this turn."""
        count = self.blocks() + 1
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path.write_text(json.dumps({"turn": self.turn, "blocks": count}))

    def reset(self) -> None:
        """A new turn (the user's prompt) or a turn that ended: start counting again."""
        try:
            self.path.unlink()
        except OSError:
            pass


_CHANNEL_TAG = re.compile(r'<channel source="([^"]*)"[^>]*?\smessage_id="(\d+)"')


def channel_ids_in_prompt(payload: Mapping[str, Any], server: str) -> list[int]:
    """Ids of our channel messages in a UserPromptSubmit prompt (Claude Code starts a turn
    with an accepted channel message as its prompt, and runs this hook on it)."""
    prompt = payload.get("prompt")
    if not isinstance(prompt, str) or "<channel" not in prompt:
        return []
    return [int(number) for source, number in _CHANNEL_TAG.findall(prompt) if source == server]


def pushes_at_once(delivery: Any) -> bool:
    """True when the peer's bridge shows every message itself, at once: a channel that its
    agent accepts, or that is being tried (a channel message starts a turn, and with it this
    hook, while its push awaits confirmation). An unconfirmed channel falls back to hooks."""
    text = str(delivery or "")
    return delivery == "push" or text.startswith(("channel (confirmed", "channel (not confirmed yet"))


def run(event: str, payload: Mapping[str, Any], settings: Settings, stdout: TextIO, note: Callable[[str], None],
        stderr: TextIO | None = None) -> int:
    """One hook run; its exit status (2: Claude Code's stop guard blocks, the reason on ``stderr``).
    Raises on failure (the caller logs it and exits 0)."""
    agent = agents.session_of(os.getpid())
    if agent is None:
        note("no agent session above this process")
        return 0
    counter = StopCounter(settings, payload, agent.pid)
    if event == "UserPromptSubmit":
        counter.reset()
    if event == output.STOP_EVENT and not output.stop_may_block(payload, counter.blocks()):
        return 0  # the loop guard: the count starts again with the next turn
    sock, first_calls = connect(settings)
    try:
        attach_args = [(b"agent_pid", integer(agent.pid)), (b"agent_start", floating(agent.start))]
        thread = payload.get("session_id")
        if agent.runs_threads and isinstance(thread, str) and thread:
            # One Codex app-server runs every interactive thread: the thread is the session.
            attach_args.append((b"thread_id", text(thread)))
        tags = sock.send([*first_calls, ("Attach", attach_args), ("Whoami", []),
                          ("FetchUnread", [(b"limit", integer(PAGE))])])
        for tag in tags[: len(first_calls)]:
            sock.answer(tag)
        try:
            attached = sock.answer(tags[-3])
        except AmpError as error:
            if error.code == "UNKNOWN_PEER":
                return 0  # no bridge ever registered this session: nothing to show
            raise
        peer = json_value(sock.answer(tags[-2]), b"peer")
        fetched = sock.answer(tags[-1])
        in_prompt = channel_ids_in_prompt(payload, os.environ.get("CLAUDE_PEERS_SERVER_NAME") or "claude-peers")
        if in_prompt:
            # This turn was started by our channel messages: the agent has them in this very
            # prompt. That is the evidence their pushes wait for; they are never shown again.
            sock.call("Acknowledge", [(b"message_ids", integer_list(in_prompt))])
            note(f"the prompt carries channel messages {in_prompt} of peer {peer.get('id', '?')}")
        if read_boolean(attached, b"online") and pushes_at_once(peer.get("delivery")):
            return 0  # the bridge pushes every message to the agent at once
        unread = [m for m in json_value(fetched, b"messages") if int(m["id"]) not in in_prompt]
        selection = output.select(unread, int(fetched[b"more"]))
        if not selection.text:
            if event == output.STOP_EVENT:
                counter.reset()
            return 0
        status = 0
        if event == output.STOP_EVENT and output.blocks_by_exit_status(agent.client_type):
            err = sys.stderr if stderr is None else stderr
            err.write(output.stop_reason(selection.text))
            err.flush()
            status = 2
        else:
            if event == output.STOP_EVENT:
                result = output.stop_output(selection.text)
            else:
                result = output.context_output(event, selection.text)
            # ASCII JSON: whatever the locale, the agent reads the text back exactly.
            stdout.write(json.dumps(result) + "\n")
            stdout.flush()
        if event == output.STOP_EVENT:
            counter.record_block()
        if selection.ids:
            try:
                sock.call("Acknowledge", [(b"message_ids", integer_list(selection.ids))])
            except (AmpError, BrokerUnreachable) as error:
                note(f"printed messages {selection.ids} but could not acknowledge them "
                     f"(they may be shown once more): {error}")
                return status
            note(f"showed messages {selection.ids} to peer {peer.get('id', '?')}")
        return status
    finally:
        sock.close()


def main(argv: list[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """The ``claude-peers hook`` command: exits 0 (errors go to the hook log), or 2 when the stop
    guard blocks Claude Code's turn end (the reason on stderr)."""
    args = list(sys.argv[1:] if argv is None else argv)
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    if args[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if args[:1] == [WAIT_MODE]:
        from claudepeers.hooks import wait  # the background waiter of the rewake hook

        return wait.main(args[1:], stdin)
    started = time.monotonic()
    settings: Settings | None = None
    event = args[0] if args else ""
    try:
        settings = Settings.from_env()
        payload = read_payload(stdin)
        event = event or str(payload.get("hook_event_name") or "")
        if event not in output.EVENTS:
            write_log(log_path(settings), event, f"unsupported event {event!r}; {USAGE}")
            return 0
        path = log_path(settings)
        return run(event, payload, settings, stdout, lambda line: write_log(path, event, line))
    except BrokerUnreachable as error:
        write_log(log_path(settings), event, f"{error} (mail waits for the next hook or tool call)")
    except AmpError as error:
        write_log(log_path(settings), event, f"the broker refused: {error}")
    except Exception as error:  # the agent's turn must go on whatever happened
        write_log(log_path(settings), event, f"internal error: {type(error).__name__}: {error}")
    finally:
        if os.environ.get("CLAUDE_PEERS_HOOK_TIMING"):
            sys.stderr.write(f"claude-peers hook: {1000 * (time.monotonic() - started):.1f} ms\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
