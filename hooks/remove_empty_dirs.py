"""After a copy, an update or a cookiecutter run: remove the template's optional directories
that hold nothing.

No directory of the template has a conditional name (cookiecutter cannot leave one out), so the
deployment targets and the update workflow are conditional *file* names in directories that both
tools create whatever the answers. This removes those directories when they are empty, deepest
first: only the ones listed, only when empty, so a file in one (yours or ours) keeps it.
tests/test_cookiecutter.py checks that the list names every directory whose files are all optional.
"""

from __future__ import annotations

from pathlib import Path

OPTIONAL = (
    "deploy/kubernetes",
    "deploy/kubernetes-keda",
    "deploy/supervisord",
    "deploy/systemd",
    ".github/workflows",
    ".github",
)


def remove_empty_dirs(root: Path) -> list[str]:
    removed = []
    for name in OPTIONAL:
        path = root / name
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()
            removed.append(name)
    return removed


if __name__ == "__main__":
    remove_empty_dirs(Path.cwd())
