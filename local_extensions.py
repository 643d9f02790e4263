"""The Jinja extension cookiecutter.json names (`_extensions`): cookiecutter and cruft render the
template with copier's answers, as copier does (docs/cookiecutter.md says why and what it costs).

cookiecutter imports this module from the template's root. The code is in hooks/copier_context.py,
read afresh for each Jinja environment: `cruft update` renders two releases in one process from
one checkout, and Python would otherwise keep the first release's module. Keep this file as it is.
"""

from __future__ import annotations

import runpy
from pathlib import Path

from jinja2 import Environment
from jinja2.ext import Extension

ROOT = Path(__file__).resolve().parent


class CopierContext(Extension):
    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        code = runpy.run_path(str(ROOT / "hooks" / "copier_context.py"))
        code["install"](environment, ROOT)
