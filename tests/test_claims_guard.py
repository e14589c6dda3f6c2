"""Installing and removing the claims guard in a real git repository (no broker needed)."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

from claudepeers.cli import claims_guard
from claudepeers.common.settings import Settings


def repo_at(path: Path) -> Path:
    """A fresh git repository."""
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def test_install_chains_an_existing_hook_and_uninstall_restores_it(tmp_path: Path) -> None:
    """The earlier pre-commit is kept (renamed, run first) and put back on uninstall; twice is harmless."""
    repo = repo_at(tmp_path / "r")
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\nexit 0\n")
    assert "runs first" in claims_guard.install(repo, python="/usr/bin/python3")
    assert claims_guard.MARKER in hook.read_text() and "/usr/bin/python3 -m claudepeers.cli.claims_guard" in hook.read_text()
    assert claims_guard.install(repo).startswith("claims guard installed")  # again: still one chained hook
    assert (hook.parent / claims_guard.CHAINED).read_text() == "#!/bin/sh\nexit 0\n"
    assert "earlier hook again" in claims_guard.uninstall(repo)
    assert hook.read_text() == "#!/bin/sh\nexit 0\n"
    assert claims_guard.uninstall(repo).startswith("no claims guard")


def test_the_guard_passes_with_a_note_without_a_broker_or_with_the_override(tmp_path: Path, monkeypatch) -> None:
    """No broker: pass and say claims were not checked; the override skips the check."""
    repo = repo_at(tmp_path / "r")
    (repo / "a.txt").write_text("x")
    subprocess.run(["git", "add", "a.txt"], cwd=repo, check=True)
    settings = Settings.from_env({"HOME": str(tmp_path), "CLAUDE_PEERS_SOCKET": str(tmp_path / "none.sock")})
    out = io.StringIO()
    assert claims_guard.check(repo, settings, out) == 0 and "broker is not running" in out.getvalue()
    monkeypatch.setenv(claims_guard.OVERRIDE, "1")
    out = io.StringIO()
    assert claims_guard.check(repo, settings, out) == 0 and "not checked" in out.getvalue()
