"""``claude-peers doctor``: a read-only diagnosis with a verdict and what to do.

It changes nothing and reads no one's mail: file modes, the socket, one ``Hello`` to
the broker, and the agents' configuration files.
"""

from __future__ import annotations

import glob
import os
import stat
from dataclasses import asdict
from pathlib import Path
from typing import Any

from twisted.python import usage

from claudepeers.cli import agent_config
from claudepeers.cli.agent_config import ConfigError
from claudepeers.cli.findings import Finding
from claudepeers.cli.hosts import check_hosts
from claudepeers.cli.main import EXIT_FAILED
from claudepeers.cli.runner import print_json

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
    if getattr(settings, "db_dsn", None) is not None:
        # A server's database: no file of ours to check (the broker's status says whether it reaches it).
        findings.append(Finding("info", "database", f"PostgreSQL: {settings.database_display}"))
        findings += check_agent_configs(home)
        findings += check_codex_reach(settings, home)
        return [f for f in findings if f is not None]
    db = check_private(settings.db_path, "database", 0o600)
    if db and db.level == "problem" and "mode" in db.text:
        # Readable by others is a leak, not a failure: the broker still works.
        findings.append(Finding("warn", db.check, db.text, db.fix))
    elif db:
        findings.append(db)
    else:
        findings.append(Finding("info", "database", f"{settings.db_path} does not exist yet"))
    findings += check_kept_copies(settings.db_path)
    findings += check_agent_configs(home)
    findings += check_codex_reach(settings, home)
    return [f for f in findings if f is not None]


def check_kept_copies(db_path: Path) -> list[Finding]:
    """Copies the broker kept beside the database for the operator (a damaged WAL, a rescue)."""
    findings = []
    for copy in sorted(db_path.parent.glob(f"{glob.escape(db_path.name)}-wal.damaged-*")):
        findings.append(Finding("warn", "database", f"a damaged write-ahead log was kept at {copy}: messages "
                                "were lost when the broker started after a crash (see its log)",
                                f"look at it, then remove {copy}"))
    for copy in sorted(db_path.parent.glob(f"{glob.escape(db_path.name)}.rescued-*")):
        findings.append(Finding("warn", "database", f"the broker rescued a deleted or replaced database to {copy}",
                                f"stop the broker and move {copy} to {db_path} if it holds the mail you want"))
    return findings


def check_storage(status: Any) -> list[Finding]:
    """The broker's view of its database: the file gone or replaced, a damaged WAL, failing writes, size."""
    if not isinstance(status, dict):
        return []
    storage = status.get("storage") or {}
    fix = "read the broker log, then restart the broker: claude-peers kill-broker"
    findings = [Finding("problem", "storage", str(text), fix) for text in storage.get("problems") or []]
    findings += [Finding("problem", "storage", f"database writes are failing: {cause}",
                         "free space on the disk holding the database") for cause in storage.get("writes_failing") or []]
    used, bound = storage.get("used_bytes"), storage.get("max_db_bytes")
    if isinstance(used, int) and isinstance(bound, int) and bound > 0:
        level = "warn" if used > bound * 0.9 else "ok"
        findings.append(Finding(level, "database size", f"{used} of {bound} bytes in use (CLAUDE_PEERS_MAX_DB_BYTES)",
                                "read mail is purged oldest first; unread mail waits to be read"))
    return findings


def check_agent_configs(home: Path) -> list[Finding]:
    """Claude Code and Codex registrations, the skill and the service file."""
    from claudepeers.cli.configfiles import Paths

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


def check_codex_reach(settings: Any, home: Path, now: float | None = None) -> list[Finding]:
    """Can Codex reach the broker? Its TCP settings answer, and no sandbox refused the socket."""
    import time

    from claudepeers.cli.configfiles import Paths
    from claudepeers.common.client import broker_answers
    from claudepeers.common import sandbox
    from claudepeers.common.settings import SettingError, parse_url

    try:
        entry = agent_config.codex_entry(Paths(home).codex_config.read_text())
    except (OSError, ConfigError):
        entry = None
    env = entry.get("env") if entry else None
    url = env.get("CLAUDE_PEERS_URL") if isinstance(env, dict) else None
    findings: list[Finding] = []
    tcp_fix = "run the broker with TCP on: CLAUDE_PEERS_TCP=1 claude-peers broker (or in its service's environment)"
    if url:
        try:
            parse_url(url)
            answers = broker_answers(settings.with_changes(url=url))
        except SettingError as exc:
            findings.append(Finding("problem", "codex over tcp", str(exc), "claude-peers install --codex --tcp"))
        else:
            findings.append(
                Finding("ok", "codex over tcp", f"Codex reaches the broker at {url}") if answers else
                Finding("problem", "codex over tcp", f"Codex is set to reach the broker at {url}, but nothing answers",
                        tcp_fix)
            )
    records = sandbox.failed_connects(settings.socket_path, now)
    if not records:
        return findings
    last = records[0]
    minutes = max(0, int(((time.time() if now is None else now) - float(last["time"])) // 60))
    codex = last.get("agent") == "codex" or bool(last.get("sandbox"))
    text = (f"{'a Codex session' if codex else 'a client'} (pid {last.get('pid')}"
            f"{', ' + last['sandbox'] if last.get('sandbox') else ''}) could not connect to {last.get('socket')}"
            f" {minutes} min ago: {last.get('error')}")
    if url:
        findings.append(Finding("info", "sandbox",
                                f"{text}; Codex is now set to use TCP (sessions started before still use the socket)"))
    elif codex:
        findings.append(Finding("problem", "sandbox", f"{text}. Codex's sandbox (seatbelt on macOS, in workspace-write "
                                "mode) blocks connections to the UNIX socket",
                                "claude-peers install --codex --tcp, then " + tcp_fix))
    else:
        findings.append(Finding("warn", "socket access", text,
                                f"the socket and {settings.run_dir} must belong to you; inside an agent's sandbox: "
                                "claude-peers install --codex --tcp"))
    return findings


def check_broker(settings: Any) -> list[Finding]:
    """Is a broker answering, on which version and protocol; is a socket stale?"""
    from claudepeers import __version__
    from claudepeers.wire import commands as wire
    from claudepeers.common.client import broker_answers

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
    hello, answer = _hello(settings)
    status = answer.get("status") if isinstance(answer, dict) else None
    if isinstance(hello, Exception):
        from claudepeers.cli.runner import describe_failure

        return [Finding("problem", "broker", f"{where} accepts connections but: {describe_failure(hello)[0]}")]
    findings = [Finding("ok", "broker", f"version {hello['version']}, pid {hello['pid']}, at {where}")]
    findings += check_storage(status)

    findings += check_hosts(status)
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
    return findings + check_mail_paths(answer)


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
    from claudepeers.wire import commands as wire
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
        from claudepeers.cli.configfiles import home_dir
        from claudepeers.common.settings import SettingError, Settings

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
