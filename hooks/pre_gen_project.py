"""cookiecutter and cruft, before any file is written: copier.yml's refusals.

Rendering this file evaluated every answer as copier would (hooks/copier_context.py: types,
choices, validators); ERRORS holds the refusals, each with copier's words. Exiting non-zero makes
cookiecutter stop and remove the project directory it has just created.
"""

import json
import sys

# JSON in a raw string (its escapes kept); a list, so the string never ends with a quote.
ERRORS = json.loads(r"""{{ copier_errors | tojson }}""")

if ERRORS:
    sys.exit("\n".join(ERRORS))
