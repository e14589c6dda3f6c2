"""Where a directory sits in git: top level, common git dir (for scope repo), branch."""

from __future__ import annotations

from pathlib import Path

from claudepeers.common.gitinfo import RepoInfo, repo_info

from bridge_support import git

def make_repo(base: Path) -> Path:
    repo = base / "repo"
    (repo / "sub").mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=repo)
    git("commit", "-q", "--allow-empty", "-m", "start", cwd=repo)
    return repo


def test_subdirectories_and_worktrees_share_the_common_dir(short_dir: Path) -> None:
    """A subdirectory and a worktree of one repository give the same absolute common dir."""
    repo = make_repo(short_dir)
    git("worktree", "add", "-q", "-b", "feature", str(short_dir / "wt"), cwd=repo)
    top = repo_info(str(repo))
    sub = repo_info(str(repo / "sub"))
    tree = repo_info(str(short_dir / "wt"))
    common = str((repo / ".git").resolve())
    identity = top.repo_id
    assert top == RepoInfo(root=str(repo), common_dir=common, branch="main", repo_id=identity)
    assert sub == top
    assert tree == RepoInfo(root=str(short_dir / "wt"), common_dir=common, branch="feature", repo_id=identity)


def test_a_clone_elsewhere_has_the_same_identity(short_dir: Path) -> None:
    """The identity across hosts: the same root commit and remote URL in another clone (any
    URL spelling), another identity for another remote."""
    origin = make_repo(short_dir)
    git("remote", "add", "origin", "git@example.org:team/app.git", cwd=origin)
    git("clone", "-q", str(origin), str(short_dir / "clone"), cwd=short_dir)
    git("remote", "set-url", "origin", "https://example.org/team/app", cwd=short_dir / "clone")
    here, there = repo_info(str(origin)), repo_info(str(short_dir / "clone"))
    assert here.repo_id is not None and here.repo_id.endswith(" example.org/team/app")
    assert here.repo_id == there.repo_id
    git("remote", "set-url", "origin", "https://example.org/other/app", cwd=short_dir / "clone")
    assert repo_info(str(short_dir / "clone")).repo_id != here.repo_id


def test_detached_head_has_no_branch(short_dir: Path) -> None:
    """A detached HEAD is in the repo but on no branch."""
    repo = make_repo(short_dir)
    git("checkout", "-q", "--detach", cwd=repo)
    info = repo_info(str(repo))
    assert info.root == str(repo) and info.branch is None


def test_a_repository_without_commits_still_counts(short_dir: Path) -> None:
    """A fresh `git init` has a root and a common dir, even though HEAD names no commit."""
    repo = short_dir / "fresh"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    info = repo_info(str(repo))
    assert info.root == str(repo) and info.common_dir == str((repo / ".git").resolve())


def test_outside_a_repository_or_without_git_everything_is_none(short_dir: Path) -> None:
    """No repository, or no git at all: all fields None, no exception."""
    assert repo_info(str(short_dir)) == RepoInfo()
    assert repo_info(str(short_dir), git=str(short_dir / "no-such-git")) == RepoInfo()
