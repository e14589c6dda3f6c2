"""The optional git ``pre-commit`` guard: a commit touching paths that another live peer has
claimed is refused (``claude-peers install --claims-guard``; off unless installed).

The hook runs ``python -m claudepeers.cli.claims_guard`` with the Python that installed it.
It lists the staged paths (``git diff --cached --name-only --no-renames``: both sides of a
rename), asks the broker which live claims cover them (``CheckPaths``; claims of the peer
the commit comes from, found by its agent process above the hook, do not count), and
exits 1 naming each holder and reason. It passes, with a note on stderr, when the broker
is not running (it never starts one) or when ``CLAUDE_PEERS_CLAIMS_OVERRIDE=1``;
``git commit --no-verify`` skips it as it skips every pre-commit hook. Twisted-free, like
the prompt hooks. An existing ``pre-commit`` is kept, renamed, and run first.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Sequence, TextIO

from claudepeers.common import agents
from claudepeers.common.settings import Settings
from claudepeers.hooks.amp_socket import AmpError, BrokerUnreachable
from claudepeers.hooks.run import connect
from claudepeers.wire.box import floating, integer, json_value, split_chunks, text

MARKER = "# claude-peers claims guard"
CHAINED = "pre-commit.before-claude-peers"
OVERRIDE = "CLAUDE_PEERS_CLAIMS_OVERRIDE"


def git(args: Sequence[str], cwd: str | Path | None = None) -> str:
    """Run git; its stdout (raises CalledProcessError on failure)."""
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def hook_script(python: str) -> str:
    """The pre-commit script: the chained hook first, then the guard."""
    return (
        "#!/bin/sh\n"
        f"{MARKER} (installed by `claude-peers install --claims-guard`; "
        f"{OVERRIDE}=1 or `git commit --no-verify` skips it)\n"
        f'chained="$(dirname "$0")/{CHAINED}"\n'
        'if [ -x "$chained" ]; then "$chained" "$@" || exit $?; fi\n'
        f"exec {shlex.quote(python)} -m claudepeers.cli.claims_guard\n"
    )


def hooks_dir(cwd: str | Path) -> Path:
    """This repository's hooks directory (``core.hooksPath`` and worktrees respected)."""
    path = Path(git(["rev-parse", "--git-path", "hooks"], cwd).strip())
    return path if path.is_absolute() else Path(cwd) / path


def install(cwd: str | Path, python: str = sys.executable) -> str:
    """Install the guard into the repository at ``cwd``; what was done, in words."""
    folder = hooks_dir(cwd)
    folder.mkdir(parents=True, exist_ok=True)
    hook = folder / "pre-commit"
    chained = ""
    if hook.exists() and MARKER not in hook.read_text(errors="replace"):
        if (folder / CHAINED).exists():
            raise RuntimeError(f"{hook} is not ours and {folder / CHAINED} already exists; move one of them away")
        os.replace(hook, folder / CHAINED)
        chained = f"; the existing hook runs first, as {CHAINED}"
    hook.write_text(hook_script(python))
    hook.chmod(0o755)
    return f"claims guard installed: {hook}{chained}"


def uninstall(cwd: str | Path) -> str:
    """Remove the guard and put back a hook it chained; what was done, in words."""
    folder = hooks_dir(cwd)
    hook = folder / "pre-commit"
    if not hook.exists() or MARKER not in hook.read_text(errors="replace"):
        return f"no claims guard in {folder}"
    hook.unlink()
    if (folder / CHAINED).exists():
        os.replace(folder / CHAINED, hook)
        return f"claims guard removed; {hook} is the earlier hook again"
    return f"claims guard removed from {folder}"


def step(action: str, other_targets: list[str]) -> bool:
    """``claude-peers install/uninstall --claims-guard`` in the current repository (per
    repository, so not in the user's install manifest); True when no other target was asked."""
    print((install if action == "install" else uninstall)(os.getcwd()))
    return not other_targets


def check(cwd: str | Path, settings: Settings, stderr: TextIO) -> int:
    """The guard's run: 0 lets the commit through, 1 refuses it."""
    if os.environ.get(OVERRIDE) == "1":
        stderr.write(f"claude-peers: {OVERRIDE}=1: claims not checked\n")
        return 0
    # Absolute and real, as the bridge reports its peer's repository (common/gitinfo.py).
    repo = os.path.realpath(os.path.join(cwd, git(["rev-parse", "--git-common-dir"], cwd).strip() or ".git"))
    paths = [p for p in git(["diff", "--cached", "--name-only", "--no-renames", "-z"], cwd).split("\0") if p]
    if not paths:
        return 0
    try:
        sock, first = connect(settings)
    except BrokerUnreachable:
        stderr.write("claude-peers: the broker is not running; claims not checked\n")
        return 0
    try:
        calls = list(first)
        agent = agents.find_agent(os.getpid())
        if agent is not None:
            calls.append(("Attach", [(b"agent_pid", integer(agent.pid)), (b"agent_start", floating(agent.start))]))
        payload = json.dumps(paths, ensure_ascii=False).encode("utf-8")
        calls.append(("CheckPaths", [(b"repo", text(repo)), *split_chunks(b"paths", payload)]))
        tags = sock.send(calls)
        for tag in tags[:len(first)]:
            sock.answer(tag)  # the TCP token
        if agent is not None:
            try:
                sock.answer(tags[len(first)])
            except AmpError:
                pass  # the agent has no peer (or is not accepted as one): every claim counts
        conflicts = json_value(sock.answer(tags[-1]), b"conflicts")
    except (BrokerUnreachable, AmpError) as error:
        stderr.write(f"claude-peers: claims not checked ({error})\n")
        return 0
    finally:
        sock.close()
    if not conflicts:
        return 0
    stderr.write("claude-peers: commit refused: it touches paths other agents have claimed:\n")
    for item in conflicts[:50]:
        stderr.write(f"  {item['path']}: claimed as {item['pattern']} by {item['peer_name']} ({item['peer_id']}) "
                     f"until {item['expires_at']}: {item['reason'] or '(no reason given)'}\n")
    if len(conflicts) > 50:
        stderr.write(f"  ... and {len(conflicts) - 50} more\n")
    stderr.write(f"Ask the holder (send_message), wait for the claim to end, or override: {OVERRIDE}=1 git commit ..."
                 " (or git commit --no-verify)\n")
    return 1


def main() -> None:
    """The hook's entry point (run from the repository's top level by git)."""
    try:
        status = check(os.getcwd(), Settings.from_env(), sys.stderr)
    except Exception as error:  # a broken guard must not lock the user out of committing
        sys.stderr.write(f"claude-peers: claims not checked ({type(error).__name__}: {error})\n")
        status = 0
    sys.exit(status)


if __name__ == "__main__":
    main()
