"""After every `copier update` (an unversioned `_migrations` step): fail loudly when the update left
conflicts, naming each file, so that nobody commits them unnoticed.

Copier merges a file that both the template and the user changed with `git merge-file`; where both
changed the same lines it writes conflict markers and records the file as unmerged in git's index,
yet exits 0. With `--conflict rej` it leaves `<file>.rej` next to the file instead. This step runs
last, in the project, and exits 1 when it finds either, so `copier update` exits non-zero.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def git_lines(*args: str) -> list[str]:
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def has_markers(path: Path) -> bool:
    """A whole set of conflict markers (a merge that git's index does not record as one)."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    return any(line.startswith("<<<<<<< ") for line in lines) and any(
        line.startswith(">>>>>>> ") for line in lines
    )


def conflicts() -> tuple[list[str], list[str]]:
    """Files with unresolved merges (unmerged index entries, or markers in a changed file), and
    leftover .rej files."""
    unmerged = {line.split("\t", 1)[1] for line in git_lines("ls-files", "--unmerged")}
    status = git_lines("status", "--porcelain", "--ignored", "--untracked-files=all")
    changed = [line[3:] for line in status if not line.startswith("!! ")]
    unmerged |= {path for path in changed if has_markers(Path(path))}
    rejected = sorted(line[3:] for line in status if line[3:].endswith(".rej"))
    return sorted(unmerged), rejected


def main() -> int:
    unmerged, rejected = conflicts()
    if not unmerged and not rejected:
        return 0
    lines = ["", "=" * 78, "copier update left conflicts: resolve them before you commit.", ""]
    for path in unmerged:
        lines.append(f"  conflict markers: {path}")
    for path in rejected:
        lines.append(f"  rejected change:  {path}")
    lines += [
        "",
        "Search the files for '<<<<<<< before updating' (yours above '=======', the template's",
        "below), keep what is right, delete the markers, then `git add` each file. A .rej file",
        "holds a change that could not be applied: apply it by hand, then delete it.",
        "The project's tests fail while any marker is left (test_no_update_conflicts_are_left).",
        "=" * 78,
    ]
    print("\n".join(lines), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
