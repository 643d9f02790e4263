"""{{ project_name }} Celery workers.

`app` and `create_celery_app` are loaded on first use, so light submodules (`health`) start fast;
importing `tasks` configures the app, so task calls such as `process_document.delay(...)` go to the
broker in CELERY_BROKER_URL.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "create_celery_app"):
        from . import celery_app

        return getattr(celery_app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
