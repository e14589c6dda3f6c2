"""``claude-peers install``/``uninstall`` in a temporary HOME, and the config editing behind them."""

from __future__ import annotations

import json
import plistlib
import tomllib
from pathlib import Path

import pytest
from twisted.python import usage

from claudepeers.cli import agent_config, service
from claudepeers.cli.agent_config import ConfigError
from claudepeers.cli.configfiles import Ledger, Paths
from claudepeers.cli.install import InstallOptions, uninstall_steps
from claudepeers.common.settings import Settings
from cli_support import ROOT, cli
from conftest import broker_env

CODEX_BEFORE = """# my codex config
model = "o3"

[mcp_servers.other]
command = "other-server"
args = ["--flag"]

[profiles.fast]
model = "o4-mini"
"""


def home_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment whose HOME is ``home`` and whose PATH has no real ``claude``."""
    env = broker_env(home, PATH=f"{home / 'bin'}:/usr/bin:/bin")
    env.update(extra)
    return env


def command_path() -> str:
    """The claude-peers command install registers, from this test's interpreter."""
    from claudepeers.cli.install import installed_command

    return installed_command()[0]


def test_install_writes_claude_and_codex_entries_and_keeps_the_rest(short_dir: Path) -> None:
    """install: ~/.claude.json gets mcpServers.claude-peers; the Codex TOML gets its table, rest kept."""
    (short_dir / ".codex").mkdir()
    (short_dir / ".codex" / "config.toml").write_text(CODEX_BEFORE)
    (short_dir / ".claude.json").write_text(json.dumps({"numStartups": 3, "mcpServers": {"x": {"command": "y"}}}))
    done = cli(home_env(short_dir), "install")
    assert done.returncode == 0, done.stderr
    assert "claude --dangerously-load-development-channels server:claude-peers" in done.stdout
    claude = json.loads((short_dir / ".claude.json").read_text())
    assert claude["numStartups"] == 3 and claude["mcpServers"]["x"] == {"command": "y"}
    entry = claude["mcpServers"]["claude-peers"]
    assert Path(entry["command"]).is_absolute() and entry["args"][-1] == "mcp"
    text = (short_dir / ".codex" / "config.toml").read_text()
    assert text.startswith(CODEX_BEFORE)
    codex = tomllib.loads(text)
    assert codex["mcp_servers"]["other"] == {"command": "other-server", "args": ["--flag"]}
    assert codex["mcp_servers"]["claude-peers"]["command"] == entry["command"]
    assert codex["profiles"]["fast"]["model"] == "o4-mini"


def test_install_writes_through_a_symlinked_claude_json(short_dir: Path) -> None:
    """A ~/.claude.json that links into a dotfiles folder stays a link; its target gets the entry."""
    dotfiles = short_dir / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "claude.json"
    target.write_text(json.dumps({"numStartups": 3}))
    (short_dir / ".claude.json").symlink_to(target)
    done = cli(home_env(short_dir), "install", "--claude", "--config-file")
    assert done.returncode == 0, done.stderr
    assert (short_dir / ".claude.json").is_symlink()
    claude = json.loads(target.read_text())
    assert claude["numStartups"] == 3 and "claude-peers" in claude["mcpServers"]
    assert [path.name for path in dotfiles.iterdir()] == ["claude.json"]  # no temp file left behind


def test_install_is_idempotent_and_uninstall_restores_the_files(short_dir: Path) -> None:
    """install twice changes nothing the second time; uninstall restores the originals exactly."""
    (short_dir / ".codex").mkdir()
    (short_dir / ".codex" / "config.toml").write_text(CODEX_BEFORE)
    (short_dir / ".claude").mkdir()
    settings_before = {"permissions": {"allow": ["Bash(ls:*)", "mcp__claude-peers__list_peers"]}}
    (short_dir / ".claude" / "settings.json").write_text(json.dumps(settings_before))
    env = home_env(short_dir)
    flags = ["--claude", "--codex", "--allow-tools", "--skill", "--service", "--service-kind", "systemd"]
    assert cli(env, "install", *flags).returncode == 0
    files = {p: p.read_bytes() for p in short_dir.rglob("*") if p.is_file()}
    again = cli(env, "install", *flags)
    assert again.returncode == 0, again.stderr
    assert {p: p.read_bytes() for p in short_dir.rglob("*") if p.is_file()} == files
    allow = json.loads((short_dir / ".claude" / "settings.json").read_text())["permissions"]["allow"]
    assert "mcp__claude-peers__send_message" in allow and "mcp__claude-peers__kill_peer" not in allow
    assert allow.count("mcp__claude-peers__list_peers") == 1
    removed = cli(env, "uninstall")
    assert removed.returncode == 0, removed.stderr
    assert (short_dir / ".codex" / "config.toml").read_text() == CODEX_BEFORE
    # The rule the user had before install stays; only the added ones go.
    assert json.loads((short_dir / ".claude" / "settings.json").read_text()) == settings_before
    assert not (short_dir / ".claude.json").exists()
    assert not (short_dir / ".claude" / "skills" / "claude-peers").exists()
    assert not (short_dir / ".config" / "systemd" / "user" / "claude-peers.service").exists()
    assert not (short_dir / ".config" / "claude-peers" / "install.json").exists()
    assert cli(env, "uninstall").stdout.strip() == "Nothing to uninstall."


def test_install_refuses_a_malformed_config_untouched(short_dir: Path) -> None:
    """A Codex TOML or Claude JSON that does not parse is left byte for byte, with one line each."""
    (short_dir / ".codex").mkdir()
    bad_toml = "model = \n[mcp_servers\n"
    bad_json = "{ not json"
    (short_dir / ".codex" / "config.toml").write_text(bad_toml)
    (short_dir / ".claude.json").write_text(bad_json)
    done = cli(home_env(short_dir), "install")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and all("left untouched" in line for line in lines)
    assert "config.toml is not valid TOML" in done.stderr and ".claude.json is not valid JSON" in done.stderr
    assert (short_dir / ".codex" / "config.toml").read_text() == bad_toml
    assert (short_dir / ".claude.json").read_text() == bad_json


def test_install_uses_the_claude_command_when_on_path(short_dir: Path) -> None:
    """With `claude` on PATH, install runs `claude mcp add --scope user claude-peers -- <cmd> mcp`."""
    bin_dir = short_dir / "bin"
    bin_dir.mkdir()
    calls = short_dir / "calls.log"
    fake = bin_dir / "claude"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    env = home_env(short_dir)
    assert cli(env, "install", "--claude").returncode == 0
    assert cli(env, "uninstall", "--claude").returncode == 0
    assert calls.read_text().splitlines() == [
        "mcp remove --scope user claude-peers",
        f"mcp add --scope user claude-peers -- {command_path()} mcp",
        "mcp remove --scope user claude-peers",
    ]
    assert not (short_dir / ".claude.json").exists()


def test_install_refuses_to_overwrite_a_foreign_skill(short_dir: Path) -> None:
    """A SKILL.md at our path that install did not write is kept, and install says so."""
    skill = short_dir / ".claude" / "skills" / "claude-peers" / "SKILL.md"
    skill.parent.mkdir(parents=True)
    skill.write_text("my own notes")
    done = cli(home_env(short_dir), "install", "--skill")
    assert done.returncode == 1 and "not written by claude-peers" in done.stderr
    assert skill.read_text() == "my own notes"


def test_codex_table_written_as_inline_value_is_refused() -> None:
    """An entry we cannot cut out as a table (an inline table) makes the edit refuse."""
    text = '[mcp_servers]\nclaude-peers = { command = "old" }\nother = { command = "x" }\n'
    with pytest.raises(ConfigError, match="cannot be edited safely"):
        agent_config.codex_toml_add(text, ["/bin/claude-peers"])


def test_codex_subtables_of_ours_are_removed_with_it() -> None:
    """[mcp_servers.claude-peers.env] goes with our table; other tables stay."""
    text = (
        'a = 1\n\n[mcp_servers.claude-peers]\ncommand = "old"\n\n'
        '[mcp_servers.claude-peers.env]\nX = "1"\n\n[b]\nc = 2\n'
    )
    result = agent_config.codex_toml_remove(text)
    assert tomllib.loads(result) == {"a": 1, "b": {"c": 2}}


ODD_CODEX = """# Codex settings, kept by hand   (odd spacing on purpose)
model   =   'o3'      # a literal string, and a comment after it
approval_policy="on-request"

  [mcp_servers."other server"]   # a quoted key, an indented header
  command = "other"
  args = [
      "--one",   # a comment inside a multi-line array
      "--two",
  ]

[mcp_servers.claude-peers]
# an older install's table, with a comment of the user's in it
command = "/old/claude-peers"
args = ["mcp"]

[mcp_servers.claude-peers.env]
CLAUDE_PEERS_URL = "tcp://127.0.0.1:1"

# the profiles
[profiles.fast]
model = "o4-mini"   # trailing comment
dotted.key = 1
"""
#: ODD_CODEX as it was before claude-peers: the same bytes with our two tables cut out.
ODD_CODEX_WITHOUT_US = ODD_CODEX.replace(ODD_CODEX[ODD_CODEX.index("[mcp_servers.claude-peers]"):
                                                  ODD_CODEX.index("# the profiles")], "")


def test_codex_remove_keeps_every_other_byte_of_an_oddly_written_config() -> None:
    """Comments, odd spacing, quoted keys, and a multi-line array survive the removal of our
    table (with its sub-table) byte for byte."""
    assert agent_config.codex_toml_remove(ODD_CODEX) == ODD_CODEX_WITHOUT_US


def test_codex_add_replaces_our_table_and_keeps_every_other_byte() -> None:
    """Adding moves our table to the end with the new command; the rest is the user's text exactly,
    and removing it again gives back the file as it was before us."""
    added = agent_config.codex_toml_add(ODD_CODEX, ["/opt/cp/bin/claude-peers"])
    assert added == ODD_CODEX_WITHOUT_US + "\n" + agent_config.codex_table(["/opt/cp/bin/claude-peers"])
    parsed = tomllib.loads(added)
    assert parsed["mcp_servers"]["claude-peers"] == {"command": "/opt/cp/bin/claude-peers", "args": ["mcp"]}
    assert parsed["mcp_servers"]["other server"]["args"] == ["--one", "--two"]
    assert agent_config.codex_toml_add(added, ["/opt/cp/bin/claude-peers"]) == added
    assert agent_config.codex_toml_remove(added) == ODD_CODEX_WITHOUT_US


def test_codex_table_written_with_dotted_keys_is_removed_exactly() -> None:
    """An entry of dotted keys under [mcp_servers] goes line by line; the [mcp_servers] header the
    user wrote and the other server stay."""
    text = '[mcp_servers]\nother.command = "x"   # theirs\nclaude-peers.command = "old"\nclaude-peers.args = ["mcp"]\n'
    assert agent_config.codex_toml_remove(text) == '[mcp_servers]\nother.command = "x"   # theirs\n'


def test_codex_refuses_to_add_into_an_inline_mcp_servers() -> None:
    """mcp_servers written as one inline table cannot take a table of ours: refused, with the reason."""
    text = 'mcp_servers = { other = { command = "x" } }\n'
    with pytest.raises(ConfigError, match="mcp_servers is not a table"):
        agent_config.codex_toml_add(text, ["/bin/claude-peers"])


def test_codex_table_quotes_what_toml_must_quote() -> None:
    """A command path with quotes, backslashes and non-ASCII letters reads back as written."""
    command = ['/opt/my "cp"\\bin/é/claude-peers', "--flag"]
    env = {"CLAUDE_PEERS_URL": "tcp://127.0.0.1:7899", "X Y": 'a"b'}
    entry = tomllib.loads(agent_config.codex_table(command, env))["mcp_servers"]["claude-peers"]
    assert entry == {"command": command[0], "args": ["--flag", "mcp"], "env": env}


def test_claude_json_add_keeps_other_servers_and_keys() -> None:
    """Adding our server leaves every other key and server as it was."""
    before = json.dumps({"theme": "dark", "mcpServers": {"other": {"command": "o"}}})
    after = json.loads(agent_config.claude_json_add(before, ["/opt/cp/bin/claude-peers"]))
    assert after["theme"] == "dark" and after["mcpServers"]["other"] == {"command": "o"}
    assert after["mcpServers"]["claude-peers"] == {
        "type": "stdio", "command": "/opt/cp/bin/claude-peers", "args": ["mcp"], "env": {},
    }


def test_every_install_step_is_undone_by_its_uninstall_step(short_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    """In process: each file's step installs, says what it put where, and its uninstall step (by
    the same flag) takes exactly that out again: the home is empty and the manifest gone."""
    monkeypatch.setenv("HOME", str(short_dir))
    monkeypatch.delenv("CODEX_HOME", raising=False)
    settings = Settings.from_env(broker_env(short_dir))
    options = InstallOptions()
    options.parseOptions(["--claude", "--codex", "--allow-tools", "--skill", "--hooks", "--service",
                          "--service-kind", "systemd", "--config-file"])
    paths = Paths(short_dir)
    ledger = Ledger(paths, {}, ["/opt/cp/bin/claude-peers"], use_claude_cli=False)
    steps = options.steps(settings)
    for step in steps:
        step.install(ledger)
        assert step.key in ledger.manifest and step.describe(ledger).installed()
    ledger.note_created()
    assert not ledger.failed and {type(step) for step in steps} == {
        type(step) for step in uninstall_steps(["claude", "codex", "allow-tools", "skill", "hooks", "service"])}
    printed = capsys.readouterr().out
    for step in steps:
        if step.key not in ("allow", "hooks-claude", "hooks-codex"):  # these word their counts and events
            assert step.describe(ledger).installed() in printed
    undo = Ledger(paths, ledger.manifest, use_claude_cli=False)
    for step in uninstall_steps(["claude", "codex", "allow-tools", "skill", "hooks", "service"]):
        removed = step.describe(undo).removed()
        step.uninstall(undo)
        assert removed in capsys.readouterr().out
    undo.delete_emptied_files()
    assert not undo.failed and undo.manifest == {}
    assert [path for path in short_dir.rglob("*") if path.is_file() and path.parent != short_dir / "run"] == []


def test_install_refuses_a_relative_command() -> None:
    """--command names the file agents will run: a relative path is a usage error."""
    with pytest.raises(usage.UsageError, match="--command must be an absolute path"):
        InstallOptions().parseOptions(["--command", "bin/claude-peers"])


def test_systemd_unit_has_real_paths(short_dir: Path) -> None:
    """The systemd user unit runs `<command> broker` with the real socket and database."""
    unit = service.render("systemd", short_dir, ["/opt/cp/bin/claude-peers"], Path("/s/cp.sock"), Path("/d/p.db"))
    assert unit.path == short_dir / ".config" / "systemd" / "user" / "claude-peers.service"
    assert "ExecStart=/opt/cp/bin/claude-peers broker\n" in unit.text
    assert 'Environment="CLAUDE_PEERS_SOCKET=/s/cp.sock"' in unit.text
    assert "@" not in unit.text.replace("@,", "")
    assert "systemctl --user enable --now claude-peers.service" in unit.load


def test_launchd_plist_parses_and_keeps_the_broker_alive(short_dir: Path) -> None:
    """The launchd plist is valid, runs the broker in the foreground and restarts crashes only."""
    rendered = service.render("launchd", short_dir, ["/Apps/My Tools/python", "-m", "claudepeers"],
                              Path("/s/cp.sock"), Path("/d/p&q.db"))
    plist = plistlib.loads(rendered.text.encode())
    assert plist["Label"] == "com.claude-peers.broker"
    assert plist["ProgramArguments"] == ["/Apps/My Tools/python", "-m", "claudepeers", "broker"]
    assert plist["EnvironmentVariables"] == {"CLAUDE_PEERS_SOCKET": "/s/cp.sock", "CLAUDE_PEERS_DB": "/d/p&q.db"}
    assert plist["KeepAlive"] == {"SuccessfulExit": False} and plist["RunAtLoad"] is True
    assert rendered.path == short_dir / "Library" / "LaunchAgents" / "com.claude-peers.broker.plist"
    log = short_dir / "Library" / "Logs" / "claude-peers-broker.log"
    assert plist["StandardOutPath"] == plist["StandardErrorPath"] == str(log) == str(rendered.log)
    assert f"launchctl bootstrap gui/$(id -u) {rendered.path}" in rendered.load
    assert rendered.unload == "launchctl bootout gui/$(id -u)/com.claude-peers.broker"


def test_install_service_writes_the_launch_agent_with_real_paths(short_dir: Path) -> None:
    """install --service --service-kind launchd: the plist in ~/Library/LaunchAgents, the log folder, the load line."""
    done = cli(home_env(short_dir), "install", "--service", "--service-kind", "launchd")
    assert done.returncode == 0, done.stderr
    agent = short_dir / "Library" / "LaunchAgents" / "com.claude-peers.broker.plist"
    plist = plistlib.loads(agent.read_bytes())
    assert plist["ProgramArguments"] == [command_path(), "broker"] and Path(command_path()).is_absolute()
    assert plist["EnvironmentVariables"]["CLAUDE_PEERS_SOCKET"] == str(short_dir / "run" / "cp.sock")
    assert (short_dir / "Library" / "Logs").is_dir()
    assert f"launchctl bootstrap gui/$(id -u) {agent}" in done.stdout


def test_etc_templates_are_the_shipped_ones() -> None:
    """etc/systemd and etc/launchd hold the same templates the package installs."""
    for name, folder in ((service.SYSTEMD_TEMPLATE, "systemd"), (service.LAUNCHD_TEMPLATE, "launchd")):
        assert (ROOT / "etc" / folder / name).read_text() == service.template_text(name)


def test_shipped_skill_has_front_matter_and_the_tools() -> None:
    """The packaged SKILL.md starts with name/description front matter and names every tool."""
    from claudepeers.cli.install import shipped_skill

    text = shipped_skill()
    assert text.startswith("---\nname: claude-peers\ndescription: ")
    for tool in ("list_peers", "send_message", "set_summary", "check_messages", "kill_peer"):
        assert f"`{tool}`" in text
    assert "claude --dangerously-load-development-channels server:claude-peers" in text


def test_the_registered_command_starts_a_bridge_that_answers_initialize(short_dir: Path) -> None:
    """The command and args install wrote for Codex start an MCP bridge answering initialize."""
    import subprocess

    env = home_env(short_dir)
    assert cli(env, "install", "--codex").returncode == 0
    entry = tomllib.loads((short_dir / ".codex" / "config.toml").read_text())["mcp_servers"]["claude-peers"]
    request = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "codex-mcp-client", "version": "1"}}}
    done = subprocess.run([entry["command"], *entry["args"]], input=json.dumps(request) + "\n", env=env,
                          capture_output=True, text=True, timeout=30)
    answer = json.loads(done.stdout.splitlines()[0])
    assert answer["id"] == 1 and answer["result"]["serverInfo"]["name"] == "claude-peers"


def test_doctor_checks_what_install_wrote(short_dir: Path) -> None:
    """doctor after install: configs and service point at an existing command; a broken one is a problem."""
    env = home_env(short_dir)
    assert cli(env, "install", "--claude", "--codex", "--service", "--service-kind", "systemd").returncode == 0
    report = json.loads(cli(env, "doctor", "--json").stdout)
    levels = {f["check"]: f["level"] for f in report["findings"]}
    assert levels["claude config"] == levels["codex config"] == levels["service"] == "ok"
    claude = json.loads((short_dir / ".claude.json").read_text())
    claude["mcpServers"]["claude-peers"]["command"] = str(short_dir / "gone" / "claude-peers")
    (short_dir / ".claude.json").write_text(json.dumps(claude))
    done = cli(env, "doctor")
    assert done.returncode == 1
    assert "[FAIL] claude config:" in done.stdout and "which does not exist" in done.stdout


def test_a_file_two_steps_created_goes_when_both_are_uninstalled(short_dir: Path) -> None:
    """settings.json created by --allow-tools and also edited by --hooks is deleted once both go."""
    env = home_env(short_dir)
    assert cli(env, "install", "--allow-tools", "--hooks").returncode == 0
    settings = short_dir / ".claude" / "settings.json"
    assert settings.exists()
    assert cli(env, "uninstall", "--allow-tools").returncode == 0
    assert settings.exists()  # the hooks are still in it
    assert cli(env, "uninstall").returncode == 0
    assert not settings.exists()
    assert not (short_dir / ".codex" / "hooks.json").exists()
    assert not (short_dir / ".config" / "claude-peers" / "install.json").exists()
