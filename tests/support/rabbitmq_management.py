"""RabbitMQ's management HTTP API on this machine (the rabbitmq-management tool), from the tests.

The throw-away vhosts of the stacks are made and deleted through it when it answers: a request
takes milliseconds, where each `rabbitmqctl` command starts an Erlang VM (about 0.5 CPU-seconds;
three per stack were 8 % of a whole run's CPU).
https://www.rabbitmq.com/docs/management#http-api
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .http import http_request

URL = "http://guest:guest@127.0.0.1:15672"
# The same API as the tests read it: its address and the basic-auth credentials apart.
API = "http://127.0.0.1:15672/api"
AUTH = "guest:guest"
PERMISSIONS = ("configure", "write", "read")  # a user's, on a vhost


def request(method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, str]:
    """The status and body of `method` on API + `path` (HTTP errors included); OSError when
    nothing answers."""
    return http_request(f"{API}{path}", method, body, AUTH, timeout)


def problem() -> str | None:
    """Why the API cannot be used here, or None."""
    try:
        status, _ = request("GET", "/overview", timeout=10)
    except OSError as error:
        return f"RabbitMQ's management API does not answer on 127.0.0.1:15672 ({error})"
    return None if status == 200 else f"RabbitMQ's management API answered HTTP {status}"


def _ok(method: str, path: str, body: Any = None) -> None:
    status, text = request(method, path, body)
    assert 200 <= status < 300, f"{method} {path}: HTTP {status} {text[:500]}"


def add_vhost(vhost: str, user: str = "guest") -> None:
    """A new vhost on which `user` may do everything."""
    name = quote(vhost, safe="")
    _ok("PUT", f"/vhosts/{name}")
    _ok("PUT", f"/permissions/{name}/{quote(user, safe='')}", {p: ".*" for p in PERMISSIONS})


def delete_vhost(vhost: str) -> bool:
    """Delete a vhost with everything in it (one already gone included); False where that failed,
    so that a teardown goes on to stop the rest, as with `rabbitmqctl delete_vhost`."""
    try:
        status, _ = request("DELETE", f"/vhosts/{quote(vhost, safe='')}")
    except OSError:
        return False
    return status in (204, 404)
