"""Post-copy task: make every parent of the workers package importable as a regular package.

Copier can render only the package's own directory, so `utils.workers` would leave `utils/` without an
`__init__.py`. This creates the missing ones and never touches a file that exists, so it is safe to run
again (copier update runs tasks three times) and on an existing repository.
"""

from __future__ import annotations

import sys
from pathlib import Path


def ensure_parent_packages(package_path: str, root: Path) -> list[Path]:
    created = []
    parts = package_path.split(".")
    for depth in range(1, len(parts)):
        init = root.joinpath(*parts[:depth], "__init__.py")
        if not init.exists():
            init.write_text("")
            created.append(init)
    return created


if __name__ == "__main__":
    # argv: the package path, then "quiet" or "report" (the default): whether to say what was made.
    created = ensure_parent_packages(sys.argv[1], Path.cwd())
    if sys.argv[2:3] != ["quiet"]:
        for path in created:
            print(f"created {path.relative_to(Path.cwd())}")
