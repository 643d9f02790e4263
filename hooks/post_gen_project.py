"""cookiecutter and cruft, after the files are written: what copier's `_tasks` do, then copier's
message after a copy (copier.yml).

Runs in the generated project; the scripts are those of the template being rendered.
"""

import json
import runpy
import sys
from pathlib import Path

# JSON in a raw string (its escapes kept), in a list so that the string never ends with a quote.
TEMPLATE_ROOT, PACKAGE_PATH, MESSAGE = json.loads(
    r"""[{{ template_root | tojson }}, {{ package_path | tojson }},
    {{ copier_message_after_copy(cookiecutter) | tojson }}]"""
)
HOOKS = Path(TEMPLATE_ROOT) / "hooks"


def run(script: str, *args: str) -> None:
    sys.argv = [script, *args]
    runpy.run_path(str(HOOKS / script), run_name="__main__")


run("ensure_parent_packages.py", PACKAGE_PATH)
run("remove_empty_dirs.py")
# copier.yml's message after a copy: what to do next.
print(MESSAGE)
