"""Update: `copier update` between two tagged versions of the template, made by the test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .support.vcs import commit_all, git_env, git_ok, template_repository

COPIER = str(Path(sys.executable).with_name("copier"))
TASKS = Path("template") / "{{ package_dir }}" / "tasks.py.jinja"


def copier(cwd: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """The copier CLI, with git isolated from the developer's configuration."""
    return subprocess.run(
        [COPIER, *args], cwd=cwd, env=git_env(home), capture_output=True, text=True, timeout=120
    )


@pytest.mark.timeout(180)
def test_update_of_a_project_full_of_bytecode_carries_none_and_stays_clean(
    template_snapshot: Path, tmp_path: Path
) -> None:
    """A user's machine writes bytecode into the project; `copier update` neither trips over it
    (copier refuses a dirty repository) nor adds any, and only the template's change arrives."""
    home = tmp_path / "home"
    home.mkdir()
    template = template_repository(template_snapshot, tmp_path / "template", "v0.1.0", home)
    project = tmp_path / "project"
    done = copier(tmp_path, "copy", "--trust", "--defaults", str(template), str(project), home=home)
    assert done.returncode == 0, done.stderr
    git_ok(project, "init", "-q", "-b", "main", home=home)
    commit_all(project, "generated from v0.1.0", home=home)

    # Run the project's own tests as a user would: bytecode is written next to every module.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["CELERY_BROKER_URL"] = "redis://127.0.0.1:1/0"  # refuses: no test may reach a broker
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert list(project.rglob("*.pyc")), "the project's tests wrote no bytecode"

    # The template's next release changes one module.
    (template / TASKS).write_text((template / TASKS).read_text() + "\n# changed in v0.2.0\n")
    commit_all(template, "template v0.2.0", home=home)
    git_ok(template, "tag", "v0.2.0", home=home)

    done = copier(project, "update", "--trust", "--defaults", home=home)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "# changed in v0.2.0" in (project / "utils" / "workers" / "tasks.py").read_text()
    status = git_ok(project, "status", "--porcelain", "--untracked-files=all", home=home)
    assert sorted(line[3:] for line in status.splitlines()) == [
        ".copier-answers.yml",
        "utils/workers/tasks.py",
    ], status
    git_ok(project, "add", "-A", home=home)
    tracked = git_ok(project, "ls-files", home=home).splitlines()
    assert [f for f in tracked if "__pycache__" in f or f.endswith((".pyc", ".pyo"))] == []
