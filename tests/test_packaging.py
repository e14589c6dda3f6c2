"""The installed package holds what `pip install . && twistd -n claude-peers` needs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT


def test_wheel_installs_the_twistd_plugin_and_the_data_files(short_dir: Path) -> None:
    """The wheel carries twisted/plugins/claude_peers.py, the schema files, the skill and templates.

    A `packages = find:` would silently leave the plugin out (twisted/plugins has no
    __init__.py), and the README's first command would then fail on a fresh machine.
    """
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(short_dir)],
        capture_output=True, text=True, timeout=300,
    )
    if build.returncode != 0 and "No matching distribution" in build.stderr + build.stdout:
        pytest.skip("the build backend could not be fetched for an isolated build")
    assert build.returncode == 0, build.stdout + build.stderr
    wheel, = short_dir.glob("claude_peers-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "twisted/plugins/claude_peers.py" in names
    assert not any(name in names for name in ("twisted/__init__.py", "twisted/plugins/__init__.py"))
    for expected in ("claudepeers/broker/storage/schema/v1.sql", "claudepeers/broker/storage/schema/upgrade_to_v3.sql",
                     "claudepeers/skill/SKILL.md", "claudepeers/bridge/main.py", "claudepeers/hooks/__init__.py",
                     "claudepeers/cli/main.py"):
        assert expected in names, expected
    assert any(name.startswith("claudepeers/service_templates/") and name.endswith(".service") for name in names)
