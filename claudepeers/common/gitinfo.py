"""Which repository a directory belongs to: top level, common git dir, branch.

Scope ``repo`` compares the *common* git dir (``git rev-parse --git-common-dir``), so
that worktrees and subdirectories of one repository count as the same repo. One ``git``
call answers all three questions; it takes a few milliseconds, and the bridge runs it off
the reactor thread, after it has answered ``initialize``.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

#: A git that hangs (network filesystem, huge repo) must not hold registration up.
GIT_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class RepoInfo:
    """Where ``cwd`` sits in git; every field None outside a repository."""

    root: str | None = None
    common_dir: str | None = None
    branch: str | None = None


def repo_info(cwd: str, git: str = "git") -> RepoInfo:
    """Ask git about ``cwd``; never raises (no git, no repo, timeout: all fields None)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    try:
        done = subprocess.run(
            [git, "rev-parse", "--show-toplevel", "--git-common-dir", "--abbrev-ref", "HEAD"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.SubprocessError):
        return RepoInfo()
    lines = done.stdout.splitlines()
    if len(lines) < 2:
        # Not a repository (in a repository without commits git still prints the
        # first two lines, then fails on HEAD).
        return RepoInfo()
    root, common = lines[0], lines[1]
    branch = lines[2] if len(lines) > 2 else None
    return RepoInfo(root=root, common_dir=_absolute(cwd, common), branch=_branch(branch))


def _absolute(cwd: str, path: str) -> str:
    """git prints the common dir relative to cwd (``.git``) unless it lies elsewhere."""
    return os.path.realpath(os.path.join(cwd, path))


def _branch(name: str | None) -> str | None:
    """``HEAD`` means detached: no branch."""
    if not name or name == "HEAD":
        return None
    return name
