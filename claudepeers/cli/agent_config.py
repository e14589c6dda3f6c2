"""Editing the agents' configuration files: pure text-in, text-out functions.

Each ``add``/``remove`` parses the file first and raises :class:`ConfigError` (the file
is then left untouched) when it cannot be parsed or edited safely. Edits are minimal:
the Codex TOML keeps every other byte (tomlkit); JSON files keep every other key. After an edit
the result is parsed again and compared with what was intended.
"""

from __future__ import annotations

import json
import tomllib
from typing import Iterable

import tomlkit
from tomlkit.container import OutOfOrderTableProxy
from tomlkit.items import Table

from claudepeers.common.jsonconfig import ConfigError, load_json_object

#: The MCP server name in every agent config, and the prefix of its tools' names.
SERVER_NAME = "claude-peers"
TOOL_PREFIX = f"mcp__{SERVER_NAME}__"
#: Tools put on Claude Code's allow-list by ``install --allow-tools``. ``kill_peer`` is
#: left out on purpose: ending another session should stay a question to the user.
ALLOWED_TOOLS = (
    "list_peers",
    "send_message",
    "set_summary",
    "check_messages",
    "whoami",
    "set_name",
    "wait_for_reply",
    "read_thread",
    "search_messages",
)


# --- Claude Code: ~/.claude.json ------------------------------------------------------


def _dump_json(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def claude_server_entry(command: list[str]) -> dict:
    """The ``mcpServers`` entry that starts the bridge: ``<command...> mcp``."""
    return {"type": "stdio", "command": command[0], "args": [*command[1:], "mcp"], "env": {}}


def claude_json_add(text: str | None, command: list[str], where: str = "~/.claude.json") -> str:
    """``text`` with ``mcpServers.claude-peers`` set to start ``command``."""
    data = load_json_object(text, where)
    servers = data.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise ConfigError(f"{where}: mcpServers is not an object; left untouched")
    servers[SERVER_NAME] = claude_server_entry(command)
    return _dump_json(data)


def claude_json_remove(text: str | None, where: str = "~/.claude.json") -> str | None:
    """``text`` without ``mcpServers.claude-peers`` (None when there was nothing to remove)."""
    data = load_json_object(text, where)
    servers = data.get("mcpServers")
    if not isinstance(servers, dict) or SERVER_NAME not in servers:
        return None
    del servers[SERVER_NAME]
    if not servers:
        del data["mcpServers"]
    return _dump_json(data)


def claude_json_entry(text: str | None, where: str = "~/.claude.json") -> dict | None:
    """Our ``mcpServers`` entry in a Claude Code user config, if any."""
    servers = load_json_object(text, where).get("mcpServers")
    entry = servers.get(SERVER_NAME) if isinstance(servers, dict) else None
    return entry if isinstance(entry, dict) else None


# --- Claude Code: ~/.claude/settings.json permissions.allow ----------------------------


def allow_rules(tools: Iterable[str] = ALLOWED_TOOLS) -> list[str]:
    """The permission rules naming our tools: ``mcp__claude-peers__<tool>``."""
    return [TOOL_PREFIX + tool for tool in tools]


def settings_allow_add(text: str | None, rules: list[str], where: str = "~/.claude/settings.json") -> tuple[str, list[str]]:
    """``text`` with ``rules`` in ``permissions.allow``; also returns the rules newly added."""
    data = load_json_object(text, where)
    permissions = data.setdefault("permissions", {})
    if not isinstance(permissions, dict):
        raise ConfigError(f"{where}: permissions is not an object; left untouched")
    allow = permissions.setdefault("allow", [])
    if not isinstance(allow, list):
        raise ConfigError(f"{where}: permissions.allow is not a list; left untouched")
    added = [rule for rule in rules if rule not in allow]
    allow.extend(added)
    return _dump_json(data), added


def settings_allow_remove(text: str | None, rules: list[str], where: str = "~/.claude/settings.json") -> str | None:
    """``text`` without ``rules`` in ``permissions.allow`` (None when none was there)."""
    data = load_json_object(text, where)
    permissions = data.get("permissions")
    allow = permissions.get("allow") if isinstance(permissions, dict) else None
    if not isinstance(allow, list) or not any(rule in allow for rule in rules):
        return None
    permissions["allow"] = [rule for rule in allow if rule not in rules]
    if not permissions["allow"]:
        del permissions["allow"]
        if not permissions:
            del data["permissions"]
    return _dump_json(data)


# --- Codex: ~/.codex/config.toml --------------------------------------------------------
# tomlkit edits the document it parsed, comments, blank lines, quoting and key order kept,
# so every byte outside our table stays as the user wrote it; tomllib (the strict parser,
# as Codex's own) checks the file before and the result after every edit.


def _load_toml(text: str | None, where: str) -> dict:
    try:
        return tomllib.loads(text or "")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML ({exc}); left untouched") from None


def codex_table(command: list[str], env: dict[str, str] | None = None) -> str:
    """The ``[mcp_servers.claude-peers]`` table that starts the bridge (with ``env``, if any)."""
    entry = tomlkit.table()
    entry["command"] = command[0]
    entry["args"] = [*command[1:], "mcp"]
    if env:
        pairs = tomlkit.inline_table()
        pairs.update(sorted(env.items()))
        entry["env"] = pairs
    servers = tomlkit.table(is_super_table=True)  # no [mcp_servers] header of its own
    servers[SERVER_NAME] = entry
    document = tomlkit.document()
    document["mcp_servers"] = servers
    return tomlkit.dumps(document)


def _expected_without_us(data: dict) -> dict:
    copy = json.loads(json.dumps(data, default=str))
    servers = copy.get("mcp_servers")
    if isinstance(servers, dict):
        servers.pop(SERVER_NAME, None)
        if not servers and "mcp_servers" in copy:
            del copy["mcp_servers"]
    return copy


def _comparable(data: dict) -> dict:
    result = json.loads(json.dumps(data, default=str))
    if result.get("mcp_servers") == {}:
        del result["mcp_servers"]
    return result


def _comments_kept(before: str, after: str) -> str:
    """``after`` (``before`` less our table) with the comment lines that ended our table put back.

    tomlkit counts comment lines under a table's last key as that table's, but in the
    text they stand above the next header (``# the profiles`` over ``[profiles]``): they
    are the user's, for what follows. Only when our table was one run of lines.
    """
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    head = 0
    while head < len(new) and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < len(new) - head and old[-1 - tail] == new[-1 - tail]:
        tail += 1
    if head + tail != len(new):
        return after  # removed in several places (an out-of-order table): nothing to put back
    removed = old[head:len(old) - tail]
    start = len(removed)
    while start > 0 and (not removed[start - 1].strip() or removed[start - 1].lstrip().startswith("#")):
        start -= 1
    comments = removed[start:]
    while comments and not comments[0].strip():
        comments.pop(0)  # the blank lines after our last key were ours
    return "".join(new[:head] + comments + new[head:])


def codex_toml_remove(text: str | None, where: str = "~/.codex/config.toml") -> str | None:
    """``text`` without our server table (None when there was nothing to remove).

    Our entry goes with its sub-tables (``[mcp_servers.claude-peers.env]``), whether it
    is written as a table or with dotted keys; every other line stays as it was. An entry
    written as an inline table (``claude-peers = { ... }``) is the user's own and is refused.
    """
    data = _load_toml(text, where)
    servers = data.get("mcp_servers")
    if not isinstance(servers, dict) or SERVER_NAME not in servers:
        return None
    document = tomlkit.parse(text or "")
    if not isinstance(document["mcp_servers"][SERVER_NAME], (Table, OutOfOrderTableProxy)):
        raise ConfigError(
            f"{where}: the {SERVER_NAME} server is not written as a [mcp_servers.{SERVER_NAME}] "
            "table, so it cannot be edited safely; left untouched (edit it by hand)"
        )
    del document["mcp_servers"][SERVER_NAME]
    result = _comments_kept(text or "", tomlkit.dumps(document))
    # The blank line that set our table off from the one before it is that table's: it
    # goes too when ours was the last (the file then ends as it did before us).
    if not (text or "").endswith("\n\n") and result.endswith("\n\n"):
        result = result.rstrip("\n") + "\n"
    result = result if result.strip() else ""
    if _comparable(_load_toml(result, where)) != _expected_without_us(data):
        raise ConfigError(f"{where}: cannot remove the {SERVER_NAME} table safely; left untouched (edit it by hand)")
    return result


def codex_toml_add(
    text: str | None, command: list[str], where: str = "~/.codex/config.toml", env: dict[str, str] | None = None
) -> str:
    """``text`` with ``[mcp_servers.claude-peers]`` starting ``command`` at its end, the rest kept as is."""
    data = _load_toml(text, where)
    if "mcp_servers" in data:
        if not isinstance(tomlkit.parse(text or "")["mcp_servers"], (Table, OutOfOrderTableProxy)):
            raise ConfigError(f"{where}: mcp_servers is not a table (an inline table cannot take ours); "
                              "left untouched (edit it by hand)")
    base = codex_toml_remove(text, where)
    if base is None:
        base = text or ""
    if base.strip():
        base = base if base.endswith("\n") else base + "\n"
        base = base if base.endswith("\n\n") else base + "\n"
    else:
        base = ""
    result = base + codex_table(command, env)
    parsed = _load_toml(result, where)
    want = _expected_without_us(data)
    entry: dict = {"command": command[0], "args": [*command[1:], "mcp"]}
    if env:
        entry["env"] = dict(env)
    want.setdefault("mcp_servers", {})[SERVER_NAME] = entry
    if _comparable(parsed) != want:
        raise ConfigError(f"{where}: cannot add the {SERVER_NAME} table safely; left untouched")
    return result


def codex_entry(text: str | None, where: str = "~/.codex/config.toml") -> dict | None:
    """Our ``mcp_servers`` entry in a Codex config, if any."""
    servers = _load_toml(text, where).get("mcp_servers")
    entry = servers.get(SERVER_NAME) if isinstance(servers, dict) else None
    return entry if isinstance(entry, dict) else None
