"""The MCP tools' declarations (name, description, argument schema) and their validation.

The seed's tools (``list_peers(scope)``, ``send_message(to_id, message)``,
``set_summary(summary)``, ``check_messages()``, ``kill_peer(peer_id)``) plus ``whoami`` and
``set_name`` are declared here; the coordination and thread tools in their own modules
(:mod:`.tools_coord`, :mod:`.tools_threads`), and :data:`TOOLS` holds them all, in the
order ``tools/list`` shows them. Arguments are checked before a tool runs; a bad call gets a
text saying how to call it instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema

from claudepeers.bridge import tools_coord, tools_threads


_STRING = {"type": "string"}
TOOLS: dict[str, dict[str, Any]] = {
    "list_peers": {
        "description": (
            "List the other AI agents (Claude Code, Codex) running on this machine: id, name, "
            "client, working directory, repository, branch, summary. scope: 'machine' (all of this "
            "host), 'directory' (same working directory), 'repo' (same git repository, worktrees "
            "included, on every host) or 'network' (every host sharing the broker's database; "
            "address a peer of another host as name@host)."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "scope": {
                    "type": "string",
                    "enum": ["machine", "directory", "repo", "network"],
                    "description": "machine, directory, repo or network (default machine)",
                }
            },
            "additionalProperties": False,
        },
    },
    "send_message": {
        "description": (
            "Send a message to another agent. to_id is a peer id or its unique name (from "
            "list_peers), or one of " + tools_coord.FANOUT_TARGETS + " to send it to each "
            "of those peers. A Claude Code peer sees it at once, a Codex peer on its next turn; "
            "the result says which. To answer a message, pass its # as reply_to (the reply "
            "joins its thread); to get the answer to yours, call wait_for_reply."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "to_id": {**_STRING, "minLength": 1, "description": "peer id or unique name, scope:... or group:..."},
                "message": {**_STRING, "minLength": 1, "description": "the text to send"},
                "reply_to": {"type": "integer", "minimum": 1, "description": "the # of the message this answers"},
            },
            "required": ["to_id", "message"],
            "additionalProperties": False,
        },
    },
    "set_summary": {
        "description": (
            "Tell the other agents what you are working on (one or two sentences); shown by "
            "list_peers and with your messages."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {"summary": {**_STRING, "description": "what you are working on"}},
            "required": ["summary"],
            "additionalProperties": False,
        },
    },
    "check_messages": {
        "description": "Show every message from other agents that you have not seen yet.",
        "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False},
    },
    "kill_peer": {
        "description": (
            "Terminate a stuck, unresponsive or finished peer's agent session (its claude or "
            "codex process, not only its MCP server). peer_id is a peer id or unique name."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {"peer_id": {**_STRING, "minLength": 1, "description": "peer id or unique name"}},
            "required": ["peer_id"],
            "additionalProperties": False,
        },
    },
    "whoami": {
        "description": "Show your own peer id, name, summary and what the others see of you.",
        "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False},
    },
    "set_name": {
        "description": "Choose your peer name (unique among live peers); others may address you by it.",
        "inputSchema": {
            "type": "object",
            "properties": {"name": {**_STRING, "minLength": 1, "description": "the new name"}},
            "required": ["name"],
            "additionalProperties": False,
        },
    },
    **tools_coord.TOOLS,
    **tools_threads.THREAD_TOOLS,
}

_VALIDATORS = {name: jsonschema.Draft202012Validator(tool["inputSchema"]) for name, tool in TOOLS.items()}


class _QuickCheck:
    """A quick check for the few keywords our schemas use; False means "ask jsonschema".

    A jsonschema validator, compiled once per tool, takes 12 us for a send_message against
    0.5 us here (``bench/validation_bench.py``), and the sending bridge spends about 70 us
    of CPU on a whole send (docs/benchmarks.md, "Tool-argument validation"); well-formed
    calls (nearly all) pass here, and only the others get the full validation with its
    precise error messages. Never True for arguments that jsonschema
    would reject (tests/test_bridge_tools.py checks this on generated inputs). The
    schema is read once: a property with any other keyword or type always asks jsonschema.
    """

    _KNOWN = frozenset({"type", "enum", "minLength", "description"})

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self._required = tuple(schema.get("required", ()))
        #: property -> (allowed values or None, minimum length); None: ask jsonschema
        self._strings: dict[str, tuple[frozenset[str] | None, int] | None] = {}
        for key, spec in schema.get("properties", {}).items():
            if set(spec) - self._KNOWN or spec.get("type") != "string":
                self._strings[key] = None
            else:
                enum = frozenset(spec["enum"]) if "enum" in spec else None
                self._strings[key] = (enum, spec.get("minLength", 0))

    def __call__(self, arguments: Mapping[str, Any]) -> bool:
        """True when ``arguments`` certainly fit the schema."""
        for key in self._required:
            if key not in arguments:
                return False
        strings = self._strings
        for key, value in arguments.items():
            spec = strings.get(key)
            if spec is None or type(value) is not str:
                return False
            enum, min_length = spec
            if enum is not None and value not in enum:
                return False
            if len(value) < min_length:
                return False
        return True


_QUICK_CHECKS = {name: _QuickCheck(tool["inputSchema"]) for name, tool in TOOLS.items()}


def validation_error(name: str, arguments: Mapping[str, Any] | None) -> str | None:
    """None when the arguments fit the tool's schema, else a text saying how to fix them."""
    validator = _VALIDATORS.get(name)
    if validator is None:
        return f"Unknown tool {name!r}. The claude-peers tools are: {', '.join(TOOLS)}."
    if isinstance(arguments, Mapping) and _QUICK_CHECKS[name](arguments):
        return None
    errors = sorted(validator.iter_errors(dict(arguments or {})), key=lambda error: list(error.path))
    if not errors:
        return None
    problems = []
    for error in errors[:5]:
        where = ".".join(str(part) for part in error.path) or "arguments"
        problems.append(f"{where}: {error.message}")
    usage = _usage(name)
    return f"Invalid arguments for {name}: " + "; ".join(problems) + f". Call it as {usage}."


def _usage(name: str) -> str:
    schema = TOOLS[name]["inputSchema"]
    required = set(schema.get("required", ()))
    parts = []
    for argument, spec in schema.get("properties", {}).items():
        kind = "|".join(spec["enum"]) if "enum" in spec else spec.get("type", "value")
        parts.append(f"{argument}: {kind}" + ("" if argument in required else " (optional)"))
    return f"{name}({', '.join(parts)})"
