"""git for tests: no global or system configuration (a developer's excludesfile or hooks must not
hide a gap), a fixed identity, and a copy of the template as a repository with tags of its own."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

IDENTITY = {
    "GIT_AUTHOR_NAME": "Template Tests",
    "GIT_AUTHOR_EMAIL": "tests@example.invalid",
    "GIT_COMMITTER_NAME": "Template Tests",
    "GIT_COMMITTER_EMAIL": "tests@example.invalid",
}


def git_env(home: Path) -> dict[str, str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"}
    return {**env, "GIT_CONFIG_GLOBAL": os.devnull, **IDENTITY}


def git(cwd: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=git_env(home), capture_output=True, text=True, timeout=60
    )


def git_ok(cwd: Path, *args: str, home: Path) -> str:
    done = git(cwd, *args, home=home)
    assert done.returncode == 0, f"git {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def template_repository(snapshot: Path, destination: Path, tag: str, home: Path) -> Path:
    """A git repository holding a copy of the template (from its snapshot), tagged `tag`."""
    shutil.copytree(snapshot, destination)
    git_ok(destination, "init", "-q", "-b", "main", home=home)
    commit_all(destination, f"template {tag}", home=home)
    git_ok(destination, "tag", tag, home=home)
    return destination


def commit_all(repository: Path, message: str, home: Path) -> None:
    git_ok(repository, "add", "-A", home=home)
    git_ok(repository, "commit", "-q", "--allow-empty", "-m", message, home=home)
