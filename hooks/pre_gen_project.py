"""cookiecutter and cruft, before any file is written: copier.yml's refusals.

Rendering this file evaluated every answer as copier would (hooks/copier_context.py: types,
choices, validators); ERRORS holds the refusals, each with copier's words. Exiting non-zero makes
cookiecutter stop and remove the project directory it has just created.
"""

import json
import sys

# JSON in a raw string (its escapes kept); a list, so the string never ends with a quote.
ERRORS = json.loads(r"""{{ copier_errors | tojson }}""")
UPDATE_WORKFLOW = json.loads(r"""[{{ update_workflow | tojson }}]""")[0]

# The one answer copier takes and cookiecutter cannot: the weekly workflow runs `copier update`,
# which needs the answers file only copier writes.
if UPDATE_WORKFLOW:
    ERRORS.append(
        "update_workflow: the weekly update pull request runs `copier update`, which needs a"
        " project made by copier; with cookiecutter answer no, and update with `cruft update`"
        " (see the template's docs/cookiecutter.md)."
    )

if ERRORS:
    sys.exit("\n".join(ERRORS))
