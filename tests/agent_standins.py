"""Stand-in model APIs on 127.0.0.1 for the real agent CLIs (no account, no network).

Claude Code posts to ``/v1/messages`` (and ``/v1/messages/count_tokens``), Codex to
``/v1/responses``. Claude Code on Google Vertex (``CLAUDE_CODE_USE_VERTEX=1``,
``ANTHROPIC_VERTEX_BASE_URL``) posts the same Messages body to
``/projects/<p>/locations/<r>/publishers/anthropic/models/<model>:streamRawPredict`` (or
``:rawPredict``; ``count-tokens:rawPredict`` counts), answered as ``/v1/messages`` is. Every model request is recorded with the moment it arrived, so a test can
wait for the request that carries a text, and a benchmark can measure how long after a send
it came.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


#: The part of a Vertex AI path that names an Anthropic model (``.../models/<model>:<method>``).
VERTEX_MODELS = "/publishers/anthropic/models/"


def is_model_request(path: str) -> bool:
    """Whether a POST to ``path`` asks a model for an answer (not a token count)."""
    if VERTEX_MODELS in path:
        return not path.split(VERTEX_MODELS, 1)[1].startswith("count-tokens")
    return path.startswith(("/v1/messages", "/v1/responses")) and "count_tokens" not in path


def streamed_response(number: int, text: str = "done") -> bytes:
    """An OpenAI Responses API streaming answer: one assistant message saying ``text``."""
    item = {"type": "message", "role": "assistant", "id": f"msg_{number}", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}
    usage = {"input_tokens": 1, "input_tokens_details": None, "output_tokens": 1,
             "output_tokens_details": None, "total_tokens": 2}
    events = [
        ("response.created", {"type": "response.created", "response": {"id": f"resp_{number}"}}),
        ("response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": item}),
        ("response.completed", {"type": "response.completed", "response": {"id": f"resp_{number}", "usage": usage}}),
    ]
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


def streamed_function_call(number: int, name: str, arguments: dict, namespace: str | None = None) -> bytes:
    """A Responses API streaming answer that calls one tool (an MCP tool sits in a namespace)."""
    item = {"type": "function_call", "id": f"fc_{number}", "call_id": f"call_{number}", "name": name,
            "arguments": json.dumps(arguments), "status": "completed",
            **({"namespace": namespace} if namespace else {})}
    usage = {"input_tokens": 1, "input_tokens_details": None, "output_tokens": 1,
             "output_tokens_details": None, "total_tokens": 2}
    events = [
        ("response.created", {"type": "response.created", "response": {"id": f"resp_{number}"}}),
        ("response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": item}),
        ("response.completed", {"type": "response.completed", "response": {"id": f"resp_{number}", "usage": usage}}),
    ]
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


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


def streamed_tool_use(number: int, name: str, arguments: dict) -> bytes:
    """An Anthropic Messages API streaming answer that calls one tool (``stop_reason`` tool_use)."""
    events = [
        ("message_start", {"type": "message_start", "message": {
            "id": f"msg_{number}", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": f"toolu_{number:024d}", "name": name, "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "input_json_delta", "partial_json": json.dumps(arguments)}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                           "usage": {"output_tokens": 1}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return "".join(f"event: {event}\ndata: {json.dumps(data)}\n\n" for event, data in events).encode()


class StandInApi:
    """A local Messages and Responses API that records every model request.

    ``on_request(api, request)`` runs before each model request is answered (for example to
    send the agent's peer a message on the first one). Every answer says "done" and ends the
    turn. ``arrivals[i]`` is the ``time.monotonic()`` at which ``requests[i]`` came in;
    ``paths`` lists every POST's path, model request or not.
    """

    def __init__(self, on_request: Callable[["StandInApi", dict], Any] | None = None,
                 respond: Callable[[int, dict], bytes | None] | None = None,
                 respond_messages: Callable[[int, dict], bytes | None] | None = None) -> None:
        """Serve on a free localhost port in a thread.

        ``respond(number, request)`` may answer a Responses API request itself (e.g. with
        :func:`streamed_function_call`), ``respond_messages`` a Messages API one (e.g. with
        :func:`streamed_tool_use`); None keeps the default "done".
        """
        self.requests: list[dict] = []
        self.arrivals: list[float] = []
        self.paths: list[str] = []
        self._on_request = on_request
        self._changed = threading.Condition()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    request = json.loads(body)
                except ValueError:
                    request = {}
                api.paths.append(self.path)
                if is_model_request(self.path):
                    arrived = time.monotonic()
                    if api._on_request is not None:
                        api._on_request(api, request)
                    with api._changed:
                        api.requests.append(request)
                        api.arrivals.append(arrived)
                        api._changed.notify_all()
                if self.path.startswith("/v1/responses"):
                    data = (respond(len(api.requests), request) if respond else None) or \
                        streamed_response(len(api.requests))
                else:
                    data = (respond_messages(len(api.requests), request) if respond_messages else None) or \
                        streamed_text("done")
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

    def wait_for_text(self, text: str, timeout: float, after: int = 0) -> tuple[dict, float]:
        """The first recorded request (from index ``after`` on) whose JSON contains ``text``,
        and when it arrived.

        Waits on the recorder's condition (woken by each new request), up to ``timeout``
        seconds; raises ``TimeoutError`` if none came.
        """
        deadline = time.monotonic() + timeout
        seen = after
        with self._changed:
            while True:
                for index in range(seen, len(self.requests)):
                    if text in json.dumps(self.requests[index]):
                        return self.requests[index], self.arrivals[index]
                seen = len(self.requests)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no model request carried {text!r} within {timeout} s")
                self._changed.wait(left)

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
