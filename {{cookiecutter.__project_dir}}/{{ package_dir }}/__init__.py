"""{{ project_name }} Celery workers.

`app`, `create_celery_app` and `enqueue_many` are loaded on first use, so light submodules
(`health`) start fast; importing `tasks` configures the app, so task calls such as
`process_document.delay(...)` go to the broker in CELERY_BROKER_URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bulk import enqueue_many
    from .celery_app import app, create_celery_app

__all__ = ["app", "create_celery_app", "enqueue_many"]


def __getattr__(name: str) -> Any:
    if name in ("app", "create_celery_app"):
        from . import celery_app

        return getattr(celery_app, name)
    if name == "enqueue_many":
        from . import bulk

        return bulk.enqueue_many
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
