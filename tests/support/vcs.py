"""git for tests: no global or system configuration (a developer's excludesfile or hooks must not
hide a gap), a fixed identity, and a copy of the template as a repository with tags of its own."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .render import locked

RELEASES_FILE = Path(__file__).resolve().parents[2] / "releases.txt"


def releases() -> list[tuple[str, str]]:
    """(tag, commit) of every release in releases.txt, oldest first."""
    lines = RELEASES_FILE.read_text().splitlines()
    return [tuple(line.split()[:2]) for line in lines if line.strip() and line[0] != "#"]


def next_release() -> str:
    """A tag newer than every release (the next major): what the working tree is tagged as."""
    major = max(int(tag[1:].split(".")[0]) for tag, _ in releases())
    return f"v{major + 1}.0.0"


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


class Workspace:
    """A template repository with releases made by the test, and projects generated from it.

    copier runs as the CLI a user types, with git isolated from the developer's configuration.
    """

    COPIER = str(Path(sys.executable).with_name("copier"))

    def __init__(
        self, snapshot: Path, root: Path, history: Path | None = None, shared: Path | None = None
    ) -> None:
        """A new repository of `snapshot` tagged v1.0.0; with `history`, a clone of that
        repository with a tag for each release in releases.txt (a clone of main has no tags),
        and `snapshot` committed on top, tagged `next_release()`: `copier update` takes the
        newest tag, so that is what an update reaches.

        `shared`: a directory that the workspaces of one run share (without `history`), where
        `generate` keeps each v1.0.0 copy it makes, for the next workspace to start from."""
        self.root = root
        self.home = root / "home"
        self.home.mkdir()
        self.shared = shared if history is None else None
        if history is None:
            self.template = template_repository(snapshot, root / "template", "v1.0.0", self.home)
            return
        self.template = root / "template"
        git_ok(root, "clone", "-q", "--no-local", str(history), "template", home=self.home)
        for tag, commit in releases():
            self.git(self.template, "tag", "--force", tag, commit)
        for entry in self.template.iterdir():
            if entry.name != ".git":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        shutil.copytree(snapshot, self.template, dirs_exist_ok=True)
        commit_all(self.template, "the working tree", home=self.home)
        self.git(self.template, "tag", next_release())

    def git(self, repository: Path, *args: str) -> str:
        return git_ok(repository, *args, home=self.home)

    def release(self, tag: str, edits: dict[str, tuple[str, str]]) -> None:
        """Edit template files (path: (old text, new text), each replaced exactly once), commit, tag."""
        for relative, (old, new) in edits.items():
            path = self.template / relative
            text = path.read_text()
            assert text.count(old) == 1, f"{relative}: {old!r} found {text.count(old)} times"
            path.write_text(text.replace(old, new))
        commit_all(self.template, f"template {tag}", home=self.home)
        self.git(self.template, "tag", tag)

    def copier(self, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.COPIER, *args],
            cwd=cwd,
            env=git_env(self.home),
            capture_output=True,
            text=True,
            timeout=180,
        )

    def generate(self, name: str, *data: str, ref: str | None = None) -> Path:
        """`copier copy` into a new git repository, committed; `data` as KEY=VALUE strings.

        With `shared` (and no `ref`), the first workspace of the run to ask for `data` runs the
        copy; the others copy its result and point its `_src_path` at their own template, whose
        v1.0.0 is the same snapshot: copier would write the same files (a copy costs 3 to 4
        CPU-seconds with its git commands; nine tests start from the same one)."""
        project = self.root / name
        if self.shared is not None and ref is None:
            self._copy_of_the_shared(data, project)
        else:
            self._copier_copy(data, ref, project)
        self.git(project, "init", "-q", "-b", "main")
        commit_all(project, "generated", home=self.home)
        return project

    def _copier_copy(self, data: tuple[str, ...], ref: str | None, project: Path) -> None:
        args = ["copy", "--trust", "--defaults", *(f"--data={item}" for item in data)]
        args += ["--vcs-ref", ref] if ref else []
        done = self.copier(self.root, *args, str(self.template), str(project))
        assert done.returncode == 0, done.stdout + done.stderr

    def _copy_of_the_shared(self, data: tuple[str, ...], project: Path) -> None:
        assert self.shared is not None
        name = hashlib.sha256(json.dumps(data).encode()).hexdigest()[:16]
        made, record = self.shared / f"v1.0.0-{name}", self.shared / f"v1.0.0-{name}.json"
        with locked(self.shared / f"v1.0.0-{name}.lock"):
            if not record.exists():
                self._copier_copy(data, None, made)
                record.write_text(json.dumps({"template": str(self.template)}))
        shutil.copytree(made, project, symlinks=True)
        answers = project / ".copier-answers.yml"
        old = f"_src_path: {json.loads(record.read_text())['template']}\n"
        text = answers.read_text()
        assert text.count(old) == 1, f"{answers}: no line {old!r}"
        answers.write_text(text.replace(old, f"_src_path: {self.template}\n"))

    def update(self, project: Path, *data: str) -> subprocess.CompletedProcess[str]:
        args = ["update", "--trust", "--defaults", *(f"--data={item}" for item in data)]
        return self.copier(project, *args)

    def status(self, project: Path) -> list[str]:
        """`git status --porcelain` lines, untracked files listed one by one."""
        return self.git(project, "status", "--porcelain", "--untracked-files=all").splitlines()
