"""End to end with the real Claude Code CLI (slow; skipped unless a ``claude`` binary is found).

``CLAUDE_PEERS_TEST_CLAUDE`` names the binary (e.g. ``node_modules/.bin/claude`` from
``npm install @anthropic-ai/claude-code``), else ``claude`` on PATH is used. Claude Code talks
to a stand-in Anthropic API server on localhost, so no account or network is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from cli_support import cli
from conftest import BrokerProcess, broker_env

CLAUDE = os.environ.get("CLAUDE_PEERS_TEST_CLAUDE") or shutil.which("claude")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CLAUDE, reason="no claude binary (set CLAUDE_PEERS_TEST_CLAUDE)"),
]


def streamed_text(text: str) -> bytes:
    """An Anthropic Messages API streaming answer that says ``text`` and ends the turn."""
    events = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": 1}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


class StandInApi:
    """A local Messages API: records every request; on the first one, sends the peer a message."""

    def __init__(self, on_first_request: Any) -> None:
        """Serve on a free localhost port in a thread."""
        self.requests: list[dict] = []
        self._on_first = on_first_request
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    request = json.loads(body)
                except ValueError:
                    request = {}
                if "/v1/messages" in self.path and "count_tokens" not in self.path:
                    if not api.requests:
                        api._on_first()
                    api.requests.append(request)
                data = streamed_text("done")
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def broker(short_dir: Path) -> Iterator[BrokerProcess]:
    """A broker whose HOME is the test's directory (so install writes there too)."""
    process = BrokerProcess(short_dir, broker_env(short_dir, PATH="/usr/bin:/bin")).start()
    try:
        yield process
    finally:
        process.stop()


def test_claude_code_stop_guard_shows_mail_that_arrived_during_the_turn(broker: BrokerProcess) -> None:
    """Real Claude Code: its bridge registers; mail sent during the turn comes back as Stop hook feedback."""
    env = broker.env
    installed = cli(env, "install", "--claude", "--config-file", "--hooks", "--stop-guard")
    assert installed.returncode == 0, installed.stderr
    sent: list[subprocess.CompletedProcess] = []
    api = StandInApi(lambda: sent.append(cli(env, "send", "e2e", "E2E-PEER-MAIL, please look")))
    try:
        done = subprocess.run(
            [str(CLAUDE), "-p", "hello"],
            env={**env, "CLAUDE_PEER_NAME": "e2e", "ANTHROPIC_API_KEY": "sk-ant-test", "ANTHROPIC_BASE_URL": api.url},
            cwd=broker.base, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
    finally:
        api.close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert sent and sent[0].returncode == 0, sent and sent[0].stderr
    feedback = [
        part["text"] for request in api.requests for message in request.get("messages", [])
        if isinstance(message.get("content"), list)
        for part in message["content"] if part.get("type") == "text" and "E2E-PEER-MAIL" in part.get("text", "")
    ]
    # Every later request repeats the conversation; the message is in it as one Stop hook feedback.
    assert feedback and all(text.startswith("Stop hook feedback:") for text in feedback), api.requests[-1:]
    assert "\u2502 E2E-PEER-MAIL, please look" in feedback[0]
    shown = [line for line in (broker.base / "run" / "hooks.log").read_text().splitlines() if "showed messages" in line]
    assert len(shown) == 1 and "hook Stop" in shown[0]
