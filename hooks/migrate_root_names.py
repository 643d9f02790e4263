"""Migration to 1.1.0 (`_migrations`, stages before and after): in an existing repository
(new_project: false) the root files that 1.0.0 wrote under common names get names of their own:

    .env.example -> .env.workers.example     Dockerfile   -> Dockerfile.workers
    compose.yaml -> compose.workers.yaml     .dockerignore -> Dockerfile.workers.dockerignore

Left to itself, copier would delete each old file (the new release no longer renders it), the
user's edits and a user's own file of that name included. So:

- before: render the project's release (1.0.0) with its answers, for the files as they were
  generated; take each old file that release generated out of the tree, into .git/, where copier
  neither patches nor deletes it;
- after: a file that resembles the generated one is ours: the user's edits are merged into the new
  name (`git merge-file` against the 1.0.0 render; a real conflict leaves markers, which
  hooks/check_update.py reports). A file that does not resemble it is the user's own (copier once
  overwrote it, and the user restored it): it goes back under its old name, unchanged.
New projects keep the common names: nothing to do for them.
"""

from __future__ import annotations

import difflib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

RENAMED = {
    ".env.example": ".env.workers.example",
    "Dockerfile": "Dockerfile.workers",
    ".dockerignore": "Dockerfile.workers.dockerignore",
    "compose.yaml": "compose.workers.yaml",
}
ANSWERS = Path(".copier-answers.yml")
OURS_IF_SIMILAR = 0.5  # difflib ratio to the generated file; an edited copy stays far above it


def git(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=check)


def stash() -> Path:
    return Path(git("rev-parse", "--git-dir").stdout.strip()) / "copier-migrate-1.1.0"


def render_release(answers: dict[str, object], destination: Path) -> None:
    """The project's current release, rendered as copier rendered it (tasks skipped)."""
    import copier

    data = {key: value for key, value in answers.items() if not key.startswith("_")}
    copier.run_copy(
        str(answers["_src_path"]),
        destination,
        data=data,
        vcs_ref=str(answers["_commit"]),
        defaults=True,
        unsafe=True,
        quiet=True,
        skip_tasks=True,
    )


def before() -> None:
    answers = yaml.safe_load(ANSWERS.read_text())
    if answers.get("new_project", True):
        return
    with tempfile.TemporaryDirectory() as scratch:
        generated = Path(scratch) / "release"
        render_release(answers, generated)
        for old in RENAMED:
            tracked = git("ls-files", "--error-unmatch", old, check=False).returncode == 0
            if not (generated / old).is_file() or not tracked:
                continue  # the release did not write it, or git does not know it: not ours
            for kind, source in (("user", Path(old)), ("generated", generated / old)):
                (stash() / kind).mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, stash() / kind / old)
            git("rm", "--quiet", "--cached", old)
            Path(old).unlink()


def after() -> None:
    if not stash().is_dir():
        return
    for old, new in RENAMED.items():
        user, generated = stash() / "user" / old, stash() / "generated" / old
        if not user.is_file():
            continue
        mine, theirs = user.read_text(), generated.read_text()
        if difflib.SequenceMatcher(None, mine, theirs).ratio() < OURS_IF_SIMILAR:
            shutil.copy2(user, old)  # the user's own file: back, byte for byte
            git("add", old)
            print(f"kept your own {old}; ours is now {new}")
        elif mine != theirs and Path(new).is_file():
            labels = ["-L", f"{old} (yours)", "-L", f"{old} (1.0.0)", "-L", f"{new} (new)"]
            merged = git("merge-file", "-p", *labels, str(user), str(generated), new, check=False)
            Path(new).write_text(merged.stdout)
            print(f"moved your edits of {old} to {new}")
        else:
            print(f"{old} is now {new}")
    shutil.rmtree(stash())


if __name__ == "__main__":
    {"before": before, "after": after}[sys.argv[1]]()
