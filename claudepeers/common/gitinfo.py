"""Which repository a directory belongs to: top level, common git dir, branch.

Scope ``repo`` compares the *common* git dir (``git rev-parse --git-common-dir``), so
that worktrees and subdirectories of one repository count as the same repo; across hosts,
where paths differ, the repository's identity (its root commit and remote URL) decides.
Three ``git`` calls answer it all in a few milliseconds; the bridge runs them off the
reactor thread, after it has answered ``initialize``.
"""

from __future__ import annotations

import os
import re
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
    #: The repository's identity on any machine: "<root commit> <remote URL>" (DESIGN 7:
    #: paths differ between hosts); None outside a repository or before its first commit.
    repo_id: str | None = None


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
    return RepoInfo(root=root, common_dir=_absolute(cwd, common), branch=_branch(branch),
                    repo_id=_identity(cwd, git, env))


def _identity(cwd: str, git: str, env: dict[str, str]) -> str | None:
    """``<root commit> <remote URL>``: the first root commit of HEAD and the normalized URL
    of the remote ``origin`` (else the first remote), or only the commit without remotes."""
    try:
        roots = subprocess.run([git, "rev-list", "--max-parents=0", "HEAD"], cwd=cwd, env=env,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=GIT_TIMEOUT_SECONDS)
        remotes = subprocess.run([git, "config", "--get-regexp", r"^remote\..*\.url$"], cwd=cwd, env=env,
                                 stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=GIT_TIMEOUT_SECONDS)
    except (OSError, subprocess.SubprocessError):
        return None
    commits = sorted(roots.stdout.split())
    if roots.returncode != 0 or not commits:
        return None
    urls = dict(line.split(" ", 1) for line in remotes.stdout.splitlines() if " " in line)
    url = urls.get("remote.origin.url") or next(iter(sorted(urls.values())), "")
    return f"{commits[0]} {normalize_remote(url)}".strip()


def normalize_remote(url: str) -> str:
    """One spelling of a remote on every machine: ``host/path`` without scheme, user, port
    or ``.git`` (``git@example.org:a/b.git`` and ``https://example.org/a/b`` agree)."""
    url = url.strip()
    if not url:
        return ""
    match = re.match(r"^[a-z][a-z0-9+.-]*://(?:[^@/]*@)?([^/:]+)(?::\d+)?/(.*)$", url, re.I)
    if match is None:
        match = re.match(r"^(?:[^@/]*@)?([^/:]+):(.*)$", url)  # scp-like user@host:path
    if match is None:
        return url.rstrip("/")  # a local path: as it is
    host, path = match.group(1).lower(), match.group(2).strip("/")
    if path.endswith(".git"):
        path = path[:-4]
    return f"{host}/{path}"


def _absolute(cwd: str, path: str) -> str:
    """git prints the common dir relative to cwd (``.git``) unless it lies elsewhere."""
    return os.path.realpath(os.path.join(cwd, path))


def _branch(name: str | None) -> str | None:
    """``HEAD`` means detached: no branch."""
    if not name or name == "HEAD":
        return None
    return name
