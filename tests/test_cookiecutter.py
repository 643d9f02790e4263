"""cookiecutter and cruft from the one template tree: same questions, same files, same refusals.

Each answer set of the render matrix is rendered by the cookiecutter CLI from the template
snapshot and compared with copier's render of it, file list, bytes and modes. The invalid answers
copier refuses are refused by cookiecutter with the same message, leaving nothing on disk. A
project made by `cruft create` from one release is updated by `cruft update` to the next.
"""

from __future__ import annotations

import json
import os
import runpy
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from .support.render import (
    RENDER_MATRIX,
    TEMPLATE_DIR_NAME,
    TEMPLATE_ROOT,
    Project,
    render,
    run_project_suite,
)
from .support.vcs import Workspace, commit_all, git_env
from .test_render import (
    INVALID_ANSWERS,
    USER_FILES,
    first_steps_of_a_new_project,
    next_steps,
    write_user_files,
)

BIN = Path(sys.executable).parent
COPIER_ONLY = {".copier-answers.yml"}
CRUFT_ONLY = {".cruft.json"}


@pytest.fixture(autouse=True)
def hook_scripts_kept_out_of_tmp(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cookiecutter writes each hook, rendered, to a temporary file that it never removes
    (cookiecutter/cookiecutter#886): two a render, so in a directory of pytest's, not in /tmp.
    Its processes (and cruft's) get the same directory as TMPDIR."""
    scratch = tmp_path_factory.mktemp("tmp")
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))


def cli_value(value: Any) -> str:
    """An answer as `cookiecutter KEY=VALUE` takes it: a list comma-separated, a bool as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def cookiecutter(
    template: Path, output: Path, answers: dict[str, Any], *options: str
) -> subprocess.CompletedProcess[str]:
    extra = [f"{key}={cli_value(value)}" for key, value in answers.items()]
    return subprocess.run(
        [
            str(BIN / "cookiecutter"),
            "--no-input",
            "-o",
            str(output),
            *options,
            str(template),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        # No user configuration or replay directory of the developer's.
        env={**os.environ, "HOME": str(output.parent), "COOKIECUTTER_CONFIG": os.devnull},
    )


def in_process(template: Path, output: Path, answers: dict[str, Any], force: bool = False) -> None:
    """cookiecutter's own entry point in this process, as the CLI calls it (the CLI has tests of
    its own below; an interpreter start each is what this saves); its hooks run as processes.
    The caller points HOME at a test directory: cookiecutter writes its replay file there."""
    from cookiecutter.main import cookiecutter as run_cookiecutter

    run_cookiecutter(
        str(template),
        no_input=True,
        extra_context={key: cli_value(value) for key, value in answers.items()},
        output_dir=str(output),
        overwrite_if_exists=force,
        default_config=True,
    )


def generate(template: Path, root: Path, answers: dict[str, Any]) -> Path:
    """The project cookiecutter makes of `answers`: a new directory, or files added to an
    existing repository (new_project=no: the top directory is ".", so -f)."""
    output = root / "out"
    output.mkdir(parents=True)
    existing = answers.get("new_project") is False
    in_process(template, output, answers, force=existing)
    if existing:
        return output
    (project,) = output.iterdir()
    return project


def tree(path: Path, files: tuple[str, ...] | None = None) -> dict[str, tuple[bytes, bool]]:
    """File: (content, executable) of `files` (default: every file under `path`)."""
    names = files or tuple(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    return {
        name: ((path / name).read_bytes(), bool((path / name).stat().st_mode & stat.S_IXUSR))
        for name in sorted(names)
    }


def assert_same_tree(copier_project: Project, cookiecutter_project: Path) -> None:
    ours = tree(copier_project.path, copier_project.files)
    theirs = tree(cookiecutter_project)
    ours = {k: v for k, v in ours.items() if k not in COPIER_ONLY}
    theirs = {k: v for k, v in theirs.items() if k not in CRUFT_ONLY}
    assert sorted(theirs) == sorted(ours), "file lists differ"
    differ = [name for name in ours if ours[name] != theirs[name]]
    assert differ == [], f"contents or modes differ: {differ}"
    directories = {
        str(p.relative_to(cookiecutter_project))
        for p in cookiecutter_project.rglob("*")
        if p.is_dir()
    }
    parents = {str(Path(name).parent) for name in ours} - {"."}
    assert directories <= {str(p) for name in parents for p in [Path(name), *Path(name).parents]}, (
        "cookiecutter left empty directories"
    )


# -- One declaration


def test_cookiecutter_json_is_what_copier_yml_declares() -> None:
    """cookiecutter.json is derived from copier.yml (scripts/update_cookiecutter_json.py)."""
    build = runpy.run_path(str(TEMPLATE_ROOT / "scripts" / "update_cookiecutter_json.py"))["build"]
    assert (TEMPLATE_ROOT / "cookiecutter.json").read_text() == build(), (
        "cookiecutter.json is out of date: python scripts/update_cookiecutter_json.py"
    )
    asked = json.loads((TEMPLATE_ROOT / "cookiecutter.json").read_text())
    code = runpy.run_path(str(TEMPLATE_ROOT / "hooks" / "copier_context.py"))
    questionnaire = code["Questionnaire"](TEMPLATE_ROOT)
    assert [k for k in asked if not k.startswith("_")] == questionnaire.asked()


def test_no_directory_name_is_conditional_and_empty_ones_are_removed() -> None:
    """cookiecutter cannot leave a directory out, so no directory of the template has a
    conditional name; each directory whose files are all optional is pruned when empty."""
    tree_root = TEMPLATE_ROOT / TEMPLATE_DIR_NAME
    directories = [p for p in tree_root.rglob("*") if p.is_dir()]
    assert not [d for d in directories if "{%" in d.name]
    optional = runpy.run_path(str(TEMPLATE_ROOT / "hooks" / "remove_empty_dirs.py"))["OPTIONAL"]
    all_optional = {
        str(d.relative_to(tree_root))
        for d in directories
        if all(f.name.startswith("{% if") for f in d.rglob("*") if f.is_file())
    }
    assert all_optional == set(optional)


# -- Same output


# Every answer set but the weekly copier update workflow, which cookiecutter refuses (below).
COOKIECUTTER_SETS = [
    name for name, answers in RENDER_MATRIX.items() if not answers.get("update_workflow")
]


@pytest.mark.parametrize("name", COOKIECUTTER_SETS)
def test_cookiecutter_renders_the_same_tree_as_copier(
    name: str,
    render_project: Any,
    template_snapshot: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    answers = RENDER_MATRIX[name]
    copier_project = render_project(**answers)
    assert_same_tree(copier_project, generate(template_snapshot, tmp_path, dict(answers)))


def test_update_workflow_is_refused_with_the_way_to_update(
    template_snapshot: Path, tmp_path: Path
) -> None:
    """The weekly workflow runs `copier update`, which a cookiecutter project cannot: refused
    before anything is written, saying what to do instead."""
    output = tmp_path / "out"
    output.mkdir()
    done = cookiecutter(template_snapshot, output, {"update_workflow": True})
    assert done.returncode != 0
    assert "update_workflow: the weekly update pull request runs `copier update`" in done.stderr
    assert "`cruft update`" in done.stderr
    assert list(output.iterdir()) == []


def test_cookiecutter_defaults_make_a_project_whose_own_suite_passes(
    template_snapshot: Path, tmp_path: Path
) -> None:
    """And cookiecutter prints copier's next steps, with the project's path to cd into."""
    output = tmp_path / "out"
    output.mkdir()
    done = cookiecutter(template_snapshot, output, {})
    assert done.returncode == 0, done.stderr
    project = output / "my-project"
    first = first_steps_of_a_new_project(project)
    assert next_steps(done.stdout)[: len(first)] == first
    suite = run_project_suite(project)
    assert suite.returncode == 0, suite.stdout[-3000:]


def test_existing_repository_keeps_every_file_of_its_own(
    template_snapshot: Path, tmp_path: Path
) -> None:
    """cookiecutter -f -o <repository> new_project=no: the repository of the copier test keeps
    every file byte-identical, ours get names of their own, and our tests pass there."""
    repository = tmp_path / "out"
    write_user_files(repository)
    answers = {"new_project": False, "deploy_targets": ["docker", "systemd"]}
    done = cookiecutter(template_snapshot, repository, answers, "-f")
    assert done.returncode == 0, done.stderr
    for name, text in USER_FILES.items():
        assert (repository / name).read_text() == text, f"{name} was changed"
    for ours in (".env.workers.example", "Dockerfile.workers", "compose.workers.yaml"):
        assert (repository / ours).is_file(), ours
    suite = run_project_suite(repository, "tests/utils_workers")
    assert suite.returncode == 0, suite.stdout[-3000:]


# -- Same refusals


# Choice questions with a fixed default are menus in cookiecutter, which refuses a value outside
# the menu itself, before our hook runs, in its own words (which name the field and the choices).
COOKIECUTTER_MENUS = {
    name
    for name, value in json.loads((TEMPLATE_ROOT / "cookiecutter.json").read_text()).items()
    if isinstance(value, list) and not name.startswith("_")
}


def copier_refusal(field: str, value: Any, tmp_path: Path, template: Path) -> str:
    with pytest.raises(ValueError) as error:
        render(tmp_path / "copier", {field: value}, src=template, vcs_ref=None)
    return str(error.value)


@pytest.mark.parametrize(("field", "value", "words"), INVALID_ANSWERS)
def test_invalid_answer_is_refused_as_copier_refuses_it_and_nothing_written(
    field: str,
    value: Any,
    words: str,
    tmp_path: Path,
    template_snapshot: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through cookiecutter's entry point in this process (the CLI's refusals are tested below
    and in the update-workflow test)."""
    from cookiecutter.exceptions import FailedHookException

    monkeypatch.setenv("HOME", str(tmp_path))
    output = tmp_path / "out"
    output.mkdir()
    with pytest.raises((FailedHookException, ValueError)) as refused:
        in_process(template_snapshot, output, {field: value})
    assert list(output.iterdir()) == [], "cookiecutter left files behind"
    captured = capfd.readouterr()
    said = f"{refused.value}\n{captured.out}{captured.err}"
    assert field in said and words in said, said[-2000:]
    message = copier_refusal(field, value, tmp_path, template_snapshot)
    if field not in COOKIECUTTER_MENUS:
        assert message in said, f"copier said {message!r}; cookiecutter said:\n{said[-2000:]}"


def test_invalid_answer_in_an_existing_repository_leaves_it_as_it_was(
    tmp_path: Path, template_snapshot: Path
) -> None:
    repository = tmp_path / "out"
    write_user_files(repository)
    answers = {"new_project": False, "package_path": "acme-jobs.workers"}
    done = cookiecutter(template_snapshot, repository, answers, "-f")
    assert done.returncode != 0
    assert "is not a Python identifier" in done.stderr
    written = sorted(str(p.relative_to(repository)) for p in repository.rglob("*") if p.is_file())
    assert written == sorted(USER_FILES)


# -- cruft


def tool_env(workspace: Workspace) -> dict[str, str]:
    """git isolated as the workspace has it, and the test's temporary directory (see
    hook_scripts_kept_out_of_tmp)."""
    return {**git_env(workspace.home), "TMPDIR": os.environ["TMPDIR"]}


def cruft(
    project_or_root: Path, workspace: Workspace, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "cruft"), *args],
        cwd=project_or_root,
        env=tool_env(workspace),
        capture_output=True,
        text=True,
        timeout=180,
    )


TASKS = TEMPLATE_DIR_NAME + "/{{ package_dir }}/tasks.py"
TASKS_DOCSTRING = '"""Sample tasks'


def made_with(how: str, workspace: Workspace, root: Path) -> Path:
    """A default project of v1.0.0, made by `cruft create`, or by plain cookiecutter and then
    linked with `cruft link` (a project that did not start with cruft)."""
    url = f"file://{workspace.template}"
    if how == "cruft create":
        done = cruft(root, workspace, "create", "--no-input", "--checkout", "v1.0.0", url)
        assert done.returncode == 0, done.stdout + done.stderr
        project = root / "my-project"
        workspace.git(project, "init", "-q", "-b", "main")
    else:
        done = subprocess.run(
            # cookiecutter clones a local repository given as git+file:// (it needs the "git").
            [str(BIN / "cookiecutter"), "--no-input", "--checkout", "v1.0.0", f"git+{url}"],
            cwd=root,
            env={**tool_env(workspace), "COOKIECUTTER_CONFIG": os.devnull},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        project = root / "my-project"
        workspace.git(project, "init", "-q", "-b", "main")
        args = ("link", "--no-input", "--checkout", "v1.0.0", url)
        linked = cruft(project, workspace, *args)
        assert linked.returncode == 0, linked.stdout + linked.stderr
    return project


@pytest.mark.parametrize("how", ["cruft create", "cookiecutter, then cruft link"])
def test_cruft_update_across_two_tags_brings_the_change_and_keeps_the_users_edit(
    how: str, template_snapshot: Path, tmp_path: Path
) -> None:
    workspace = Workspace(template_snapshot, tmp_path)
    project = made_with(how, workspace, tmp_path)
    readme = project / "README.md"
    readme.write_text(readme.read_text() + "\nOur notes.\n")
    commit_all(project, "generated, and a note of ours", home=workspace.home)

    workspace.release("v1.1.0", {TASKS: (TASKS_DOCSTRING, '"""Sample tasks (v1.1.0)')})
    done = cruft(project, workspace, "update", "--skip-apply-ask", "--checkout", "v1.1.0")
    assert done.returncode == 0, done.stdout + done.stderr
    tasks = (project / "utils" / "workers" / "tasks.py").read_text()
    assert tasks.startswith('"""Sample tasks (v1.1.0)')
    assert readme.read_text().endswith("\nOur notes.\n")
    recorded = json.loads((project / ".cruft.json").read_text())
    assert recorded["checkout"] == "v1.1.0"
    assert recorded["commit"] == workspace.git(workspace.template, "rev-parse", "v1.1.0").strip()
    assert not list(project.rglob("*.rej"))
    commit_all(project, "update to 1.1.0", home=workspace.home)

    check = cruft(project, workspace, "check", "--checkout", "v1.1.0")
    assert check.returncode == 0, check.stdout + check.stderr
    again = cruft(project, workspace, "update", "--skip-apply-ask", "--checkout", "v1.1.0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert workspace.status(project) == []
