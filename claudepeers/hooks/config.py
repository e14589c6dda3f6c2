"""The agents' hook settings: adding and removing our hook entries, text in, text out.

Claude Code (``~/.claude/settings.json``) and Codex (``~/.codex/hooks.json``) read the
same shape::

    {"hooks": {"UserPromptSubmit": [{"hooks": [{"type": "command", "command": "...", "timeout": 10}]}]}}

Claude Code also gets the rewake waiter, ``<claude-peers> hook wait``, on SessionStart,
UserPromptSubmit and Stop, as a command hook with ``"asyncRewake": true`` (accepted, with
``rewakeMessage`` and ``rewakeSummary``, by 2.1.197 and 2.1.332; Codex has no such hook).

An entry is ours when it is a command hook running ``<claude-peers> hook <event>`` or
``<claude-peers> hook wait`` (the ``claude-peers`` script, or ``python -m claudepeers``), so install can replace its own
entries and uninstall remove exactly them, whatever else the file holds. Every other key,
event and handler is kept as it was. A file that cannot be parsed raises
:class:`~claudepeers.cli.agent_config.ConfigError` and is left untouched.
"""

from __future__ import annotations

import json
import os
import shlex
from typing import Any, Iterable

from claudepeers.common.jsonconfig import ConfigError, load_json_object
from claudepeers.hooks.output import CONTEXT_EVENTS, EVENTS, STOP_EVENT

#: Seconds an agent gives the hook before killing it (the hook itself gives up after ~3 s).
HOOK_TIMEOUT = 10
#: Events installed by ``install --hooks``; the stop guard adds STOP_EVENT.
DEFAULT_EVENTS = ("SessionStart", "UserPromptSubmit")
assert set(DEFAULT_EVENTS) == CONTEXT_EVENTS
#: Events that start a rewake waiter: the session's start, each prompt (a turn interrupted
#: with Esc has no Stop) and each turn's end.
REWAKE_EVENTS = ("SessionStart", "UserPromptSubmit", STOP_EVENT)
#: Seconds Claude Code lets a waiter run (it exits by itself a little earlier; the next
#: turn's Stop starts another). A day: an idle session stays wakeable that long after its
#: last turn. Below 2.1.197's cap of 2,147,483 s.
REWAKE_TIMEOUT = 86_400
#: What the model reads before the messages, and the one line the person sees.
REWAKE_MESSAGE = "claude-peers: peer messages arrived while you were idle. Read them; reply with send_message or act on them if they need it."
REWAKE_SUMMARY = "claude-peers: new peer mail"


def events_for(stop_guard: bool) -> list[str]:
    """The hook events to install: the context events, plus Stop with the stop guard."""
    return [*DEFAULT_EVENTS, *([STOP_EVENT] if stop_guard else [])]


def hook_command(command: list[str], event: str) -> str:
    """The shell command an agent runs for ``event``: ``<command...> hook <event>``."""
    return shlex.join([*command, "hook", event])


def rewake_handler(command: list[str]) -> dict[str, Any]:
    """Claude Code's handler entry for the rewake waiter (the same for each of its events)."""
    return {"type": "command", "command": shlex.join([*command, "hook", "wait"]), "timeout": REWAKE_TIMEOUT,
            "asyncRewake": True, "rewakeMessage": REWAKE_MESSAGE, "rewakeSummary": REWAKE_SUMMARY}


def is_ours(handler: Any) -> bool:
    """Whether a hook handler entry runs ``claude-peers hook <event>``."""
    if not isinstance(handler, dict) or handler.get("type") != "command":
        return False
    try:
        words = shlex.split(str(handler.get("command", "")))
    except ValueError:
        return False
    if len(words) < 3 or words[-2] != "hook" or (words[-1] not in EVENTS and words[-1] != "wait"):
        return False
    program = words[:-2]
    return os.path.basename(program[0]) == "claude-peers" or program[-2:] == ["-m", "claudepeers"]


def _load(text: str | None, where: str) -> dict:
    data = load_json_object(text, where)
    hooks = data.get("hooks")
    if hooks is not None and not isinstance(hooks, dict):
        raise ConfigError(f"{where}: hooks is not an object; left untouched")
    for event, groups in (hooks or {}).items():
        if not isinstance(groups, list):
            raise ConfigError(f"{where}: hooks.{event} is not a list; left untouched")
    return data


def _dump(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _strip_ours(data: dict) -> bool:
    """Remove our handlers (and groups, events, ``hooks`` left empty); True if any was removed."""
    hooks = data.get("hooks")
    if not isinstance(hooks, dict):
        return False
    removed = False
    for event in list(hooks):
        kept_groups = []
        for group in hooks[event]:
            handlers = group.get("hooks") if isinstance(group, dict) else None
            if not isinstance(handlers, list) or not any(is_ours(h) for h in handlers):
                kept_groups.append(group)
                continue
            removed = True
            rest = [h for h in handlers if not is_ours(h)]
            if rest:
                kept_groups.append({**group, "hooks": rest})
        if kept_groups:
            hooks[event] = kept_groups
        else:
            del hooks[event]
    if not hooks:
        del data["hooks"]
    return removed


def hooks_add(text: str | None, command: list[str], events: Iterable[str], where: str, rewake: bool = False) -> str:
    """``text`` with exactly our hooks for ``events`` (replacing any of ours already there),
    and with ``rewake`` the waiter on REWAKE_EVENTS (a group of its own: it runs in the
    background, beside the prompt hook)."""
    data = _load(text, where)
    _strip_ours(data)
    hooks = data.setdefault("hooks", {})
    for event in events:
        handler = {"type": "command", "command": hook_command(command, event), "timeout": HOOK_TIMEOUT}
        hooks.setdefault(event, []).append({"hooks": [handler]})
    if rewake:
        for event in REWAKE_EVENTS:
            hooks.setdefault(event, []).append({"hooks": [rewake_handler(command)]})
    return _dump(data)


def hooks_remove(text: str | None, where: str) -> str | None:
    """``text`` without our hooks (None when there was none)."""
    data = _load(text, where)
    if not _strip_ours(data):
        return None
    return _dump(data)


def installed_events(text: str | None, where: str) -> list[str]:
    """The events that have one of our hooks in this file."""
    hooks = _load(text, where).get("hooks") or {}
    return [
        event for event, groups in hooks.items()
        if any(is_ours(h) for g in groups if isinstance(g, dict) for h in (g.get("hooks") or []))
    ]
