"""No file of the project holds conflict markers or a .rej file left by `copier update`."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What `git merge-file` writes; copier labels the sides "before updating" and "after updating".
MARKER = re.compile(rb"^(<{7} |={7}$|>{7} )", re.MULTILINE)
SKIP_DIRECTORIES = {".git", ".venv", "venv", "node_modules", "__pycache__", ".mypy_cache"}
NO_GIT = (OSError, subprocess.SubprocessError)  # not installed, or not a repository


def project_files() -> list[Path]:
    """The files git knows (tracked or not ignored), else every file under ROOT."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        return [ROOT / name for name in sorted(set(listed.decode().split("\0"))) if name]
    except NO_GIT:
        found = []
        for directory, subdirectories, names in os.walk(ROOT):
            subdirectories[:] = [d for d in subdirectories if d not in SKIP_DIRECTORIES]
            found += [Path(directory, name) for name in names]
        return found


def test_no_update_conflicts_are_left() -> None:
    markers, rejected = [], []
    for path in project_files():
        if path.suffix == ".rej":
            rejected.append(path.relative_to(ROOT))
        elif path.is_file() and path.stat().st_size < 1_000_000:
            text = path.read_bytes()
            # Whole conflicts only: a line of "=======" alone is a Markdown or reST heading.
            if b"\0" not in text and {m[:1] for m in MARKER.findall(text)} >= {b"<", b">"}:
                markers.append(path.relative_to(ROOT))
    assert not markers, f"conflict markers left by an update or a merge: {markers}"
    assert not rejected, f"changes an update could not apply (.rej files): {rejected}"
