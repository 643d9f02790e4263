"""MkDocs hooks (mkdocs.yml's `hooks:`): the site also shows three Markdown files kept outside docs/.

README.md, CHANGELOG.md and bench/README.md stay where GitHub shows them; the site adds them as
pages (OUTSIDE gives each one's page) and rewrites the relative links that cross docs/'s border,
so the same files read right on GitHub and on the site. A link to any other file outside docs/ is
left alone, and `mkdocs build --strict` reports it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
# A repository path -> its page in the site (a path under docs_dir).
OUTSIDE = {
    "README.md": "project.md",
    "CHANGELOG.md": "changelog.md",
    "bench/README.md": "bench.md",
}
SITE_TO_REPOSITORY = {page: path for path, page in OUTSIDE.items()}
# The target of an inline link or image: ](target) or ](target "title").
LINK = re.compile(r"\]\((?P<target>[^)\s]+)(?P<rest>[^)]*)\)")


def on_files(files: Files, config: Any) -> Files:
    for path, page in OUTSIDE.items():
        files.append(File.generated(config, page, abs_src_path=str(ROOT / path)))
    return files


def repository_path(src_uri: str) -> str:
    """Where a page of the site lives in the repository."""
    return SITE_TO_REPOSITORY.get(src_uri, f"docs/{src_uri}")


def site_target(target: str, src_uri: str) -> str:
    """The link `target` of the page `src_uri`, as the site needs it."""
    path, hash_, anchor = target.partition("#")
    if not path or "://" in path or path.startswith(("/", "mailto:")):
        return target
    source = repository_path(src_uri)
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
    if resolved in OUTSIDE:
        page = OUTSIDE[resolved]
    elif resolved.startswith("docs/"):
        page = resolved.removeprefix("docs/")
    else:
        return target  # another file of the repository: strict mode names it
    relative = posixpath.relpath(page, posixpath.dirname(src_uri) or ".")
    return relative + hash_ + anchor


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    src_uri = page.file.src_uri

    def rewrite(match: re.Match[str]) -> str:
        return f"]({site_target(match['target'], src_uri)}{match['rest']})"

    return LINK.sub(rewrite, markdown)
