"""The documentation site: `mkdocs build --strict` passes (links, anchors, every page in the nav),
the GitHub index lists every page, and the pictures are there and current.

The Flower screenshot is taken by scripts/flower_screenshot.py (a browser and a few processes), not
here: this only checks the checked-in file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from .support.browser import png_size
from .support.render import TEMPLATE_ROOT

DOCS = TEMPLATE_ROOT / "docs"
IMAGES = DOCS / "images"


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # mkdocs-material's notice about its future
    args = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    args += ["--config-file", str(TEMPLATE_ROOT / "mkdocs.yml")]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "WARNING" not in done.stderr, done.stderr[-4000:]
    # The pages that live outside docs/ (scripts/mkdocs_hooks.py), and the pictures.
    for page in ("index.html", "project/index.html", "changelog/index.html", "bench/index.html"):
        assert (site / page).is_file(), page
    for picture in ("images/flower.png", "images/architecture.svg", "bench.png"):
        assert (site / picture).is_file(), picture
    architecture = (site / "architecture" / "index.html").read_text()
    assert 'src="../images/architecture.svg"' in architecture
    assert 'src="../bench.png"' in (site / "bench" / "index.html").read_text()


def test_the_github_index_links_every_page() -> None:
    """docs/README.md is the index on GitHub as on the site: no page may be missing from it."""
    index = (DOCS / "README.md").read_text()
    linked = set(re.findall(r"\]\(([^)#]+\.md)\)", index))
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")} - {"README.md"}
    assert pages - linked == set()


def test_the_architecture_diagram_is_what_its_script_draws(tmp_path: Path) -> None:
    drawn = tmp_path / "architecture.svg"
    script = TEMPLATE_ROOT / "scripts" / "architecture_diagram.py"
    subprocess.run([sys.executable, str(script), "--out", str(drawn)], check=True, timeout=60)
    checked_in = IMAGES / "architecture.svg"
    assert checked_in.read_text() == drawn.read_text(), (
        "docs/images/architecture.svg is stale: run .venv/bin/python scripts/architecture_diagram.py"
    )
    root = ElementTree.parse(checked_in).getroot()  # well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    words = " ".join(root.itertext())
    for part in ("broker", "urgent worker", "beat", "Flower", "metrics exporter",
                 "result backend", "Kubernetes", "systemd", "supervisord", "Docker"):  # fmt: skip
        assert part in words, part


def test_the_flower_screenshot_is_a_png_of_sensible_size() -> None:
    screenshot = IMAGES / "flower.png"
    width, height = png_size(screenshot)
    assert 1000 <= width <= 2000 and 500 <= height <= 1500, (width, height)
    assert 10_000 < screenshot.stat().st_size < 1_000_000
