"""Reading an agent's JSON config file: the one error every config edit raises.

Shared by the CLI's install steps (``cli/agent_config.py``, ``cli/install_hooks.py``) and
the hooks' settings entries (``hooks/config.py``), which must not import the CLI.
"""

from __future__ import annotations

import json


class ConfigError(Exception):
    """A config file cannot be parsed or edited safely; it was left untouched."""


def load_json_object(text: str | None, where: str) -> dict:
    """Parse a JSON config file's text as an object; ConfigError (file untouched) if it is not one."""
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where} is not valid JSON ({exc.msg} at line {exc.lineno}); left untouched") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where} does not hold a JSON object; left untouched")
    return data
