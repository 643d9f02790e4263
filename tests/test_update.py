"""Update: `copier update` between template releases made by the test, on projects in git.

Each test builds a template repository from the working tree (tag v1.0.0), makes the next release
with a real edit, generates a project with the copier CLI (once per run and answer set, then
copied: Workspace.generate), commits it, and updates it as a user would. The tests of released
tags clone this repository, tag each release of releases.txt, and update from it to the working
tree (tagged as the next release).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from .support import tools
from .support.render import (
    TEMPLATE_DIR_NAME,
    TEMPLATE_ROOT,
    Project,
    RenderCache,
    run_project_suite,
)
from .support.vcs import Workspace, commit_all, git_env, next_release, releases
from .test_render import USER_FILES, write_user_files

pytestmark = pytest.mark.timeout(240)

BIN = Path(sys.executable).parent

TASKS = TEMPLATE_DIR_NAME + "/{{ package_dir }}/tasks.py"
ENV_EXAMPLE = TEMPLATE_DIR_NAME + "/{{ env_example }}"
CONFIG = TEMPLATE_DIR_NAME + "/{{ package_dir }}/config.py"
# Lines of the generated files that the template releases and the users below both edit.
TASKS_DOCSTRING = '"""Sample tasks'
ENV_LIMIT = "CELERY_TASK_TIME_LIMIT=300"
CONFLICT_BANNER = "copier update left conflicts"


@pytest.fixture
def workspace(template_snapshot: Path, render_cache: RenderCache, tmp_path: Path) -> Workspace:
    return Workspace(template_snapshot, tmp_path, shared=render_cache.directory)


def tree(project: Path) -> dict[str, bytes]:
    """Every file of the project but git's own and the answers file, with its content."""
    return {
        str(path.relative_to(project)): path.read_bytes()
        for path in sorted(project.rglob("*"))
        if path.is_file()
        and ".git" not in path.relative_to(project).parts
        and "__pycache__" not in path.parts
        and path.name != ".copier-answers.yml"
    }


def fresh_copy_of(project: Path, render_project: Callable[..., Project]) -> Path:
    """A copy of the working tree with the answers `project` records now: what an update to it
    must converge to (the run's shared render of those answers, made with copier's API)."""
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return render_project(**{k: v for k, v in recorded.items() if k[0] != "_"}).path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path}: {old!r} found {text.count(old)} times"
    path.write_text(text.replace(old, new))


def test_template_change_and_user_edits_in_the_same_files_both_survive(
    workspace: Workspace,
) -> None:
    project = workspace.generate("project")
    tasks = project / "utils" / "workers" / "tasks.py"
    tasks.write_text(tasks.read_text() + "\n\nUSER_CONSTANT = 42  # added by the user\n")
    with (project / ".env.example").open("a") as env_example:
        env_example.write("# Staging: the broker is redis://staging-redis:6379/0 (user note)\n")
    commit_all(project, "user edits", home=workspace.home)

    workspace.release(
        "v1.1.0",
        {
            TASKS: (TASKS_DOCSTRING, '"""Sample tasks (v1.1.0)'),
            # A help text changes where it is declared, and in the example file made from it.
            CONFIG: ('"Pool processes per worker;', '"Pool processes per worker (v1.1.0);'),
            ENV_EXAMPLE: ("# Pool processes per worker", "# Pool processes per worker (v1.1.0)"),
        },
    )
    done = workspace.update(project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert CONFLICT_BANNER not in done.stderr
    # utils/__init__.py exists: nothing to report (copier's scratch renders used to print
    # "created utils/__init__.py" twice).
    assert "created " not in done.stdout + done.stderr

    assert '"""Sample tasks (v1.1.0)' in tasks.read_text()
    assert "USER_CONSTANT = 42  # added by the user" in tasks.read_text()
    env_example = (project / ".env.example").read_text()
    assert "# Pool processes per worker (v1.1.0)" in env_example
    assert "(user note)" in env_example
    changed = sorted(line[3:] for line in workspace.status(project))
    assert changed == [
        ".copier-answers.yml",
        ".env.example",
        "utils/workers/config.py",
        "utils/workers/tasks.py",
    ]
    suite = run_project_suite(project)
    assert suite.returncode == 0, suite.stdout[-3000:]


def test_conflicting_edits_fail_the_update_loudly_and_the_project_checks_refuse_them(
    workspace: Workspace,
) -> None:
    project = workspace.generate("project")
    edit(project / ".env.example", ENV_LIMIT, "CELERY_TASK_TIME_LIMIT=600")
    commit_all(project, "user edit", home=workspace.home)
    workspace.release("v1.1.0", {ENV_EXAMPLE: (ENV_LIMIT, "CELERY_TASK_TIME_LIMIT=900")})

    done = workspace.update(project)
    assert done.returncode != 0, "copier update exited 0 with a conflict left"
    assert CONFLICT_BANNER in done.stderr and "conflict markers: .env.example" in done.stderr
    text = (project / ".env.example").read_text()
    assert "<<<<<<< before updating" in text and "CELERY_TASK_TIME_LIMIT=900" in text

    # git refuses a plain commit of an unmerged file; once the file is added, the project's own
    # suite is what stops the markers.
    refused = subprocess.run(
        ["git", "commit", "-q", "-m", "update"],
        cwd=project,
        env=git_env(workspace.home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    workspace.git(project, "add", "-A")
    suite = run_project_suite(project)
    assert suite.returncode != 0
    assert "conflict markers left by an update or a merge" in suite.stdout
    assert ".env.example" in suite.stdout


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (
            ['deploy_targets=["supervisord", "systemd"]'],
            ['deploy_targets=["systemd", "kubernetes"]'],
        ),
        (["broker=redis"], ["broker=rabbitmq"]),
        (["package_path=utils.workers"], ["package_path=acme.jobs"]),
    ],
    ids=["deploy-targets", "broker", "package-path"],
)
def test_changed_answers_leave_exactly_the_files_of_a_fresh_copy(
    workspace: Workspace,
    render_project: Callable[..., Project],
    before: list[str],
    after: list[str],
) -> None:
    project = workspace.generate("project", *before)
    done = workspace.update(project, *after)
    assert done.returncode == 0, done.stdout + done.stderr
    # Questions answered before keep their answers (result_backend stays redis after a switch to
    # RabbitMQ): the project must equal a fresh copy with the answers it records now.
    assert tree(project) == tree(fresh_copy_of(project, render_project))


def test_a_second_update_changes_nothing(workspace: Workspace) -> None:
    project = workspace.generate("project")
    workspace.release("v1.1.0", {TASKS: (TASKS_DOCSTRING, '"""Sample tasks (v1.1.0)')})
    done = workspace.update(project)
    assert done.returncode == 0, done.stdout + done.stderr
    commit_all(project, "update to v1.1.0", home=workspace.home)
    again = workspace.update(project)
    assert again.returncode == 0, again.stdout + again.stderr
    assert workspace.status(project) == []


def test_a_deleted_target_stays_deleted(workspace: Workspace) -> None:
    project = workspace.generate("project")
    workspace.git(project, "rm", "-q", "-r", "deploy/kubernetes")
    commit_all(project, "no kubernetes here", home=workspace.home)
    workspace.release("v1.1.0", {TASKS: (TASKS_DOCSTRING, '"""Sample tasks (v1.1.0)')})
    done = workspace.update(project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (project / "deploy" / "kubernetes").exists()
    assert sorted(line[3:] for line in workspace.status(project)) == [
        ".copier-answers.yml",
        "utils/workers/tasks.py",
    ]


def test_every_release_is_a_commit_of_main_with_its_changelog_entry() -> None:
    """releases.txt is what the tags are made from (scripts/tag-releases) and what the tests
    below update from, so each line must name a commit of this history and a CHANGELOG section;
    a tag of this clone that disagrees with the file is reported too."""
    changelog = (TEMPLATE_ROOT / "CHANGELOG.md").read_text()
    assert releases(), "releases.txt lists no release"
    for tag, commit in releases():
        assert f"\n## {tag[1:]} (" in changelog, f"CHANGELOG.md has no section for {tag}"
        ancestor = subprocess.run(
            ["git", "merge-base", "--is-ancestor", commit, "HEAD"], cwd=TEMPLATE_ROOT
        )
        assert ancestor.returncode == 0, f"releases.txt: {tag} {commit} is not a commit of HEAD"
        tagged = subprocess.run(
            ["git", "rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}"],
            cwd=TEMPLATE_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        assert tagged in ("", commit), f"tag {tag} is {tagged} here, releases.txt says {commit}"


@pytest.mark.parametrize("tag", [tag for tag, _ in releases()])
def test_update_from_every_released_tag_to_the_working_tree_is_conflict_free(
    tag: str, template_snapshot: Path, render_project: Callable[..., Project], tmp_path: Path
) -> None:
    """The default project of each release updates to what this checkout would release next."""
    workspace = Workspace(template_snapshot, tmp_path, history=TEMPLATE_ROOT)
    project = workspace.generate("project", ref=tag)
    done = workspace.update(project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert CONFLICT_BANNER not in done.stderr
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["_commit"] == next_release(), "the update did not reach the working tree"
    assert not [line for line in workspace.status(project) if line.startswith(("UU", "AA"))]
    assert tree(project) == tree(fresh_copy_of(project, render_project))
    suite = run_project_suite(project)
    assert suite.returncode == 0, suite.stdout[-3000:]


def test_update_of_a_project_full_of_bytecode_carries_none_and_stays_clean(
    workspace: Workspace,
) -> None:
    """A user's machine writes bytecode into the project; `copier update` neither trips over it
    (copier refuses a dirty repository) nor adds any, and only the template's change arrives."""
    project = workspace.generate("project")
    suite = run_project_suite(project, write_bytecode=True)
    assert suite.returncode == 0, suite.stdout[-3000:]
    assert list(project.rglob("*.pyc")), "the project's tests wrote no bytecode"

    workspace.release("v1.1.0", {TASKS: (TASKS_DOCSTRING, '"""Sample tasks (v1.1.0)')})
    done = workspace.update(project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(line[3:] for line in workspace.status(project)) == [
        ".copier-answers.yml",
        "utils/workers/tasks.py",
    ]
    workspace.git(project, "add", "-A")
    tracked = workspace.git(project, "ls-files").splitlines()
    assert [f for f in tracked if "__pycache__" in f or f.endswith((".pyc", ".pyo"))] == []


# -- the opt-in scheduled update: .github/workflows/template-update.yml + scripts/template-update-pr


FAKE_GH = """#!/usr/bin/env bash
# Stands in for the GitHub CLI: records its arguments, one JSON list per call; no PR exists yet.
python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >> "$GH_CALLS"
[ "$1 $2" = "pr view" ] && exit 1
exit 0
"""


def test_update_workflow_passes_actionlint_the_workflow_schema_and_shellcheck(
    render_project: Callable[..., Project], tmp_path: Path
) -> None:
    project = render_project(update_workflow=True)
    workflow = project.path / ".github" / "workflows" / "template-update.yml"
    # actionlint: expressions, action inputs and runtimes, and shellcheck on each `run:` step.
    path = os.pathsep.join([str(Path(tools.executable("shellcheck")).parent), os.environ["PATH"]])
    lint = subprocess.run(
        [tools.executable("actionlint"), "-no-color", str(workflow)],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    schema = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows"]
    done = subprocess.run([*schema, str(workflow)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    steps = yaml.safe_load(workflow.read_text())["jobs"]["update"]["steps"]
    scripts = [step["run"] for step in steps if "run" in step]
    assert scripts[-1].strip().endswith("scripts/template-update-pr")
    shellcheck = tools.executable("shellcheck")
    for number, script in enumerate(scripts):
        path = tmp_path / f"step{number}.sh"
        path.write_text("#!/usr/bin/env bash\nset -e\n" + script)  # how GitHub runs `run:`
        checked = subprocess.run([shellcheck, str(path)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout
    script = project.path / "scripts" / "template-update-pr"
    assert os.access(script, os.X_OK)
    checked = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout
    assert not (render_project().path / ".github").exists(), "the workflow is opt-in"


@pytest.fixture
def pull_request_setup(workspace: Workspace, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A project with the workflow, pushed to a bare `origin`; the environment of the workflow's
    step with a fake `gh` first on PATH."""
    project = workspace.generate("project", "update_workflow=true")
    origin = tmp_path / "origin.git"
    workspace.git(tmp_path, "init", "-q", "--bare", str(origin))
    workspace.git(project, "remote", "add", "origin", str(origin))
    workspace.git(project, "push", "-q", "origin", "main")
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "gh").write_text(FAKE_GH)
    (fake / "gh").chmod(0o755)
    env = git_env(workspace.home)
    env["PATH"] = os.pathsep.join([str(fake), str(BIN), env["PATH"]])
    env["GH_CALLS"] = str(tmp_path / "gh-calls.jsonl")
    return project, env


def run_update_pr(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["scripts/template-update-pr"], cwd=project, env=env, capture_output=True, text=True
    )


def gh_calls(env: dict[str, str]) -> list[list[str]]:
    path = Path(env["GH_CALLS"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_update_pr_script_pushes_a_branch_and_opens_a_pull_request(
    workspace: Workspace, pull_request_setup: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    project, env = pull_request_setup
    nothing = run_update_pr(project, env)
    assert nothing.returncode == 0, nothing.stdout + nothing.stderr
    assert "nothing to do" in nothing.stdout and gh_calls(env) == []

    workspace.release("v1.1.0", {TASKS: (TASKS_DOCSTRING, '"""Sample tasks (v1.1.0)')})
    done = run_update_pr(project, env)
    assert done.returncode == 0, done.stdout + done.stderr
    origin = tmp_path / "origin.git"
    subject = workspace.git(origin, "log", "-1", "--format=%s", "template-update").strip()
    assert subject == "Update from the template: v1.0.0 -> v1.1.0"
    changed = workspace.git(origin, "diff", "--name-only", "main", "template-update").split()
    assert sorted(changed) == [".copier-answers.yml", "utils/workers/tasks.py"]
    create = gh_calls(env)[-1]
    assert create[:2] == ["pr", "create"]
    assert create[create.index("--head") + 1] == "template-update"
    assert create[create.index("--base") + 1] == "main"
    assert "(conflicts)" not in create[create.index("--title") + 1]


def test_update_pr_script_marks_conflicts_in_the_pull_request(
    workspace: Workspace, pull_request_setup: tuple[Path, dict[str, str]]
) -> None:
    project, env = pull_request_setup
    edit(project / ".env.example", ENV_LIMIT, "CELERY_TASK_TIME_LIMIT=600")
    commit_all(project, "user edit", home=workspace.home)
    workspace.release("v1.1.0", {ENV_EXAMPLE: (ENV_LIMIT, "CELERY_TASK_TIME_LIMIT=900")})
    done = run_update_pr(project, env)
    assert done.returncode == 0, done.stdout + done.stderr
    create = gh_calls(env)[-1]
    assert create[create.index("--title") + 1].endswith("(conflicts)")
    body = create[create.index("--body") + 1]
    assert "Conflicts to resolve" in body and "- `.env.example`" in body


# -- 1.1.0: root files of existing repositories get names of their own (hooks/migrate_root_names.py)

EXISTING_WITH_DOCKER = ["new_project=false", 'deploy_targets=["docker"]']
USER_LABEL = 'LABEL org.opencontainers.image.vendor="Acme"  # added by the user\n'
USER_COMPOSE = "services:\n  web:\n    build: .\n"


def test_migration_to_1_1_0_renames_root_files_and_keeps_edits_and_the_users_own(
    template_snapshot: Path, render_project: Callable[..., Project], tmp_path: Path
) -> None:
    """From the real v1.0.0 tag to the working tree (past v1.1.0), in an existing repository:
    an untouched generated file moves, an edited one moves with its edits, and a file of the
    user's own (copier 1.0.0 overwrote it; the user restored it) stays as it is."""
    workspace = Workspace(template_snapshot, tmp_path, history=TEMPLATE_ROOT)
    project = workspace.generate("project", *EXISTING_WITH_DOCKER, ref="v1.0.0")
    assert (project / ".env.example").is_file() and (project / "compose.yaml").is_file()
    with (project / "Dockerfile").open("a") as dockerfile:
        dockerfile.write(USER_LABEL)
    (project / "compose.yaml").write_text(USER_COMPOSE)
    commit_all(project, "user edits, and our own compose.yaml back", home=workspace.home)

    done = workspace.update(project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert CONFLICT_BANNER not in done.stderr
    said = done.stdout + done.stderr
    assert "kept your own compose.yaml; ours is now compose.workers.yaml" in said
    assert "moved your edits of Dockerfile to Dockerfile.workers" in said
    assert ".env.example is now .env.workers.example" in said
    fresh = fresh_copy_of(project, render_project)
    for gone in (".env.example", "Dockerfile", ".dockerignore"):
        assert not (project / gone).exists(), gone
    assert (project / "compose.yaml").read_text() == USER_COMPOSE
    for same in (".env.workers.example", "compose.workers.yaml", "Dockerfile.workers.dockerignore"):
        assert (project / same).read_bytes() == (fresh / same).read_bytes(), same
    expected = (fresh / "Dockerfile.workers").read_text() + USER_LABEL
    assert (project / "Dockerfile.workers").read_text() == expected
    suite = run_project_suite(project, "tests/utils_workers")
    assert suite.returncode == 0, suite.stdout[-3000:]

    commit_all(project, "update to 1.1.0", home=workspace.home)
    again = workspace.update(project)
    assert again.returncode == 0, again.stdout + again.stderr
    assert workspace.status(project) == []


def test_existing_repository_files_stay_byte_identical_across_an_update(
    workspace: Workspace,
) -> None:
    project = workspace.root / "app"
    write_user_files(project)
    workspace.git(project, "init", "-q", "-b", "main")
    commit_all(project, "the user's repository", home=workspace.home)
    data = [*EXISTING_WITH_DOCKER[:1], 'deploy_targets=["docker", "systemd"]']
    args = ["copy", "--trust", "--defaults", *(f"--data={item}" for item in data)]
    done = workspace.copier(workspace.root, *args, str(workspace.template), str(project))
    assert done.returncode == 0, done.stdout + done.stderr
    commit_all(project, "add the workers", home=workspace.home)

    workspace.release("v1.1.0", {TASKS: (TASKS_DOCSTRING, '"""Sample tasks (v1.1.0)')})
    done = workspace.update(project)
    assert done.returncode == 0, done.stdout + done.stderr
    for name, text in USER_FILES.items():
        assert (project / name).read_text() == text, f"{name} was changed"
    assert sorted(line[3:] for line in workspace.status(project)) == [
        ".copier-answers.yml",
        "utils/workers/tasks.py",
    ]


def test_check_update_names_markers_that_git_does_not_record_as_a_conflict(
    workspace: Workspace,
) -> None:
    """A migration's own merge leaves markers without unmerged index entries: still reported."""
    project = workspace.generate("project")
    with (project / "compose.yaml").open("a") as compose:
        compose.write("<<<<<<< yours\n# a\n=======\n# b\n>>>>>>> new\n")
    check = subprocess.run(
        [sys.executable, str(TEMPLATE_ROOT / "hooks" / "check_update.py")],
        cwd=project,
        env=git_env(workspace.home),
        capture_output=True,
        text=True,
    )
    assert check.returncode == 1
    assert "conflict markers: compose.yaml" in check.stderr


SYSTEMD_README = (
    TEMPLATE_DIR_NAME + "/deploy/systemd/{% if 'systemd' in deploy_targets %}README.md{% endif %}"
)


def test_a_generated_file_the_user_moved_is_not_followed(workspace: Workspace) -> None:
    """What update cannot do: copier knows files by path. A moved file counts as deleted (it is not
    brought back) plus a file of the user's (the template's later changes do not reach it)."""
    project = workspace.generate("project")
    (project / "docs").mkdir()
    workspace.git(project, "mv", "deploy/systemd/README.md", "docs/systemd.md")
    commit_all(project, "our docs live in docs/", home=workspace.home)
    moved = (project / "docs" / "systemd.md").read_text()
    workspace.release(
        "v1.1.0", {SYSTEMD_README: ("# systemd units for", "# systemd units (v1.1.0) for")}
    )
    done = workspace.update(project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (project / "deploy" / "systemd" / "README.md").exists()
    assert (project / "docs" / "systemd.md").read_text() == moved
    assert sorted(line[3:] for line in workspace.status(project)) == [".copier-answers.yml"]
