"""``claude-peers doctor``: a read-only diagnosis with a verdict and what to do.

It changes nothing and reads no one's mail: file modes, the socket, one ``Hello`` to
the broker, and the agents' configuration files.
"""

from __future__ import annotations

import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from twisted.python import usage

from claudepeers.cli import agent_config
from claudepeers.cli.agent_config import ConfigError
from claudepeers.cli.main import EXIT_FAILED
from claudepeers.cli.runner import print_json

LEVELS = ("ok", "info", "warn", "problem")


@dataclass(frozen=True)
class Finding:
    """One check's result: its level, what was found, and what to do (if anything)."""

    level: str
    check: str
    text: str
    fix: str = ""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_private(path: Path, check: str, wanted: int) -> Finding | None:
    """A file or directory that must not be open to group or others."""
    try:
        mode = _mode(path)
        owner = path.stat().st_uid
    except FileNotFoundError:
        return None
    if owner != os.getuid():
        return Finding("problem", check, f"{path} belongs to uid {owner}, not you", f"remove or chown {path}")
    if mode & 0o077:
        return Finding("problem", check, f"{path} has mode {mode:04o} (want {wanted:04o})", f"chmod {wanted:o} {path}")
    return Finding("ok", check, f"{path} mode {mode:04o}")


def check_command(entry: dict | None, where: str, check: str, install_flag: str) -> Finding:
    """An agent config entry: present, and its command exists and is executable."""
    if entry is None:
        return Finding("info", check, f"not registered in {where}", f"claude-peers install {install_flag}")
    command = str(entry.get("command") or "")
    if not os.path.isabs(command):
        return Finding("warn", check, f"{where} runs {command!r}, not an absolute path", f"claude-peers install {install_flag}")
    if not (os.path.isfile(command) and os.access(command, os.X_OK)):
        return Finding("problem", check, f"{where} runs {command}, which does not exist", f"claude-peers install {install_flag}")
    return Finding("ok", check, f"{where} runs {command} {' '.join(entry.get('args') or [])}".rstrip())


def check_files(settings: Any, home: Path) -> list[Finding]:
    """Everything doctor can see without talking to the broker."""
    findings: list[Finding] = []
    run_dir = settings.run_dir
    if run_dir.exists():
        findings.append(check_private(run_dir, "run directory", 0o700))  # type: ignore[arg-type]
    sock = settings.socket_path
    if os.path.lexists(sock):
        if not stat.S_ISSOCK(os.lstat(sock).st_mode):
            findings.append(Finding("problem", "socket", f"{sock} is not a socket", f"move {sock} away"))
        else:
            findings.append(check_private(sock, "socket", 0o600))  # type: ignore[arg-type]
    token = check_private(settings.token_path, "token", 0o600)
    if token:
        findings.append(token)
    db = check_private(settings.db_path, "database", 0o600)
    if db and db.level == "problem" and "mode" in db.text:
        # Readable by others is a leak, not a failure: the broker still works.
        findings.append(Finding("warn", db.check, db.text, db.fix))
    elif db:
        findings.append(db)
    else:
        findings.append(Finding("info", "database", f"{settings.db_path} does not exist yet"))
    findings += check_agent_configs(home)
    return [f for f in findings if f is not None]


def check_agent_configs(home: Path) -> list[Finding]:
    """Claude Code and Codex registrations, the skill and the service file."""
    from claudepeers.cli.install import Paths

    paths = Paths(home)
    findings = []
    for check, path, read, flag in (
        ("claude config", paths.claude_json, agent_config.claude_json_entry, "--claude"),
        ("codex config", paths.codex_config, agent_config.codex_entry, "--codex"),
    ):
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = None
        try:
            entry = read(text, str(path)) if text is not None else None
        except ConfigError as exc:
            findings.append(Finding("problem", check, str(exc), f"fix {path} by hand"))
            continue
        findings.append(check_command(entry, str(path), check, flag))
    findings.append(check_service(home))
    skill = paths.skill
    findings.append(
        Finding("ok", "skill", f"{skill} installed")
        if skill.exists()
        else Finding("info", "skill", "the claude-peers skill is not installed", "claude-peers install --skill")
    )
    return findings


def check_service(home: Path) -> Finding:
    """A service file written by ``install --service``: does the command it runs exist?"""
    import plistlib
    import shlex

    from claudepeers.cli import service

    unit = home / ".config" / "systemd" / "user" / service.SYSTEMD_TEMPLATE
    agent = home / "Library" / "LaunchAgents" / service.LAUNCHD_TEMPLATE
    try:
        if unit.exists():
            line = next(l for l in unit.read_text().splitlines() if l.startswith("ExecStart="))
            path, command = unit, shlex.split(line[len("ExecStart="):])[0]
        elif agent.exists():
            path, command = agent, plistlib.loads(agent.read_bytes())["ProgramArguments"][0]
        else:
            return Finding("info", "service", "no systemd/launchd service installed",
                           "optional: claude-peers install --service")
    except (OSError, ValueError, StopIteration, KeyError, IndexError, plistlib.InvalidFileException) as exc:
        return Finding("problem", "service", f"cannot read the service file: {exc}", "claude-peers install --service")
    if not (os.path.isfile(command) and os.access(command, os.X_OK)):
        return Finding("problem", "service", f"{path} runs {command}, which does not exist",
                       "claude-peers install --service")
    return Finding("ok", "service", f"{path} runs {command}")


def check_broker(settings: Any) -> list[Finding]:
    """Is a broker answering, on which version and protocol; is a socket stale?"""
    from claudepeers import __version__, wire
    from claudepeers.client import broker_answers

    where = settings.url or str(settings.socket_path)
    if not broker_answers(settings):
        findings = []
        if not settings.url and os.path.lexists(settings.socket_path):
            findings.append(
                Finding("warn", "stale socket", f"{settings.socket_path} exists but nothing answers",
                        "the next broker start replaces it: claude-peers broker")
            )
        level = "warn" if settings.autostart and not settings.url else "problem"
        findings.append(
            Finding(level, "broker", f"no broker answers at {where}",
                    "start one: claude-peers broker (or let the first bridge start it)")
        )
        return findings
    hello, status = _hello(settings)
    if isinstance(hello, Exception):
        from claudepeers.cli.runner import describe_failure

        return [Finding("problem", "broker", f"{where} accepts connections but: {describe_failure(hello)[0]}")]
    findings = [Finding("ok", "broker", f"version {hello['version']}, pid {hello['pid']}, at {where}")]
    if hello["protocol"] != wire.PROTOCOL_VERSION:
        findings.append(
            Finding("problem", "version skew", f"broker speaks protocol {hello['protocol']}, this CLI {wire.PROTOCOL_VERSION}",
                    "restart the broker from this installation: claude-peers kill-broker")
        )
    elif hello["version"] != __version__:
        findings.append(
            Finding("warn", "version skew", f"broker {hello['version']}, this CLI {__version__}",
                    "restart the broker to run this version: claude-peers kill-broker")
        )
    return findings + check_mail_paths(status)


def check_mail_paths(answer: Any) -> list[Finding]:
    """How each connected peer gets its mail, as its bridge last said (with the MCP era)."""
    if isinstance(answer, Exception):
        return []
    findings = []
    for peer in answer["status"].get("peers") or []:
        if peer.get("state") != "online":
            continue
        delivery = str(peer.get("delivery") or "unknown")
        who = f"{peer.get('name')} ({peer.get('id')}, {peer.get('client_type')})"
        if "falling back" in delivery or "no channel path" in delivery:
            findings.append(Finding(
                "warn", "mail path", f"{who}: {delivery}",
                "its messages wait for its next tool call or prompt; for instant channel push start Claude Code "
                "with --dangerously-load-development-channels server:claude-peers (see the README, "
                "'How each agent gets its mail')"))
        else:
            findings.append(Finding("ok", "mail path", f"{who}: {delivery}"))
    return findings


def _hello(settings: Any) -> list[Any]:
    """Ask the broker Hello and Status; each answer or the exception."""
    from claudepeers import wire
    from claudepeers.cli.runner import call_in_turn

    return call_in_turn(settings, [wire.Hello, wire.Status])


def verdict(findings: list[Finding]) -> tuple[str, int]:
    """The one-line verdict and the exit status (non-zero when something is a problem)."""
    problems = [f for f in findings if f.level == "problem"]
    warnings = [f for f in findings if f.level == "warn"]
    if problems:
        return f"Verdict: {len(problems)} problem(s). First: {problems[0].text}; {problems[0].fix or 'see above'}", EXIT_FAILED
    if warnings:
        return f"Verdict: usable, {len(warnings)} warning(s); see above.", 0
    return "Verdict: all good.", 0


class DoctorOptions(usage.Options):
    """``claude-peers doctor [--json]``."""

    synopsis = "Usage: claude-peers doctor [--json]"
    optFlags = [("json", "j", "Print the findings and verdict as JSON")]

    def run(self) -> int:
        """Diagnose, print each finding and the verdict; change nothing."""
        from claudepeers.cli.install import home_dir
        from claudepeers.settings import SettingError, Settings

        try:
            settings = Settings.from_env()
        except SettingError as exc:
            findings = [Finding("problem", "settings", str(exc), "fix the environment variable")]
        else:
            findings = check_broker(settings) + check_files(settings, home_dir())
        line, status = verdict(findings)
        if self["json"]:
            print_json({"findings": [asdict(f) for f in findings], "verdict": line, "ok": status == 0})
            return status
        marks = {"ok": "ok  ", "info": "info", "warn": "WARN", "problem": "FAIL"}
        for finding in findings:
            print(f"[{marks[finding.level]}] {finding.check}: {finding.text}")
            if finding.fix and finding.level != "ok":
                print(f"       -> {finding.fix}")
        print(line)
        return status
