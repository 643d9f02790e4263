"""HTTP from the tests: Flower's dashboard and health check, the metrics exporter."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from base64 import b64encode
from typing import Any

from .processes import ManagedProcess, wait_until


def http_request(
    url: str, method: str = "GET", body: Any = None, auth: str | None = None, timeout: float = 10
) -> tuple[int, str]:
    """The status and body of `method` on `url` (`body` sent as JSON), with basic auth
    `user:password` if given; HTTP errors included, OSError when nothing answers."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if auth is not None:
        request.add_header("Authorization", "Basic " + b64encode(auth.encode()).decode())
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def http_get(url: str, auth: str | None = None) -> tuple[int, str]:
    """The status and body of GET `url` (see http_request)."""
    return http_request(url, auth=auth)


def http_status(url: str, auth: str | None = None) -> int:
    """The status of GET `url` (see http_get)."""
    return http_get(url, auth)[0]


def wait_for_http(url: str, process: ManagedProcess, timeout: float = 60) -> None:
    """Poll `url` until it answers 200; fail at once, with its log, if `process` exits."""

    def answers() -> bool:
        assert process.running(), f"{process.name} exited:\n{process.log()[-3000:]}"
        try:
            return http_status(url) == 200
        except OSError:  # not listening yet
            return False

    wait_until(answers, timeout, interval=0.2)
