"""`.env` files: `load_env_file()` puts the variables of `.env` in the working directory, or of
the file CELERY_ENV_FILE names (empty: none), into the environment, except those already set.
Worker, beat, Flower and code that sends tasks call it before reading their settings."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from .config import ConfigError

ENV_FILE = "CELERY_ENV_FILE"
LOADED: dict[str, str] = {}  # what load_env_file put into the environment, by variable name


def load_env_file(environ: MutableMapping[str, str] | None = None) -> Path | None:
    """Put the variables of the .env file into `environ` (os.environ by default), except those it
    already has (those an earlier call set count as not set). Returns the file read, if any."""
    environ = os.environ if environ is None else environ
    path = Path(environ.get(ENV_FILE, ".env"))
    if ENV_FILE in environ and not environ[ENV_FILE]:
        return None
    if not path.is_file():
        if ENV_FILE in environ:
            raise ConfigError(f"{ENV_FILE}={str(path)!r} is invalid: expected a readable file")
        return None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name.isidentifier():
            raise ConfigError(f"{path}, line {number}: expected NAME=value")
        if value[:1] in ("'", '"') and value.endswith(value[0]) and len(value) > 1:
            value = value[1:-1]
        elif " #" in value:  # a comment after an unquoted value
            value = value.split(" #", 1)[0].rstrip()
        if name not in environ or LOADED.get(name) == environ[name]:
            environ[name] = LOADED[name] = value
    return path
