"""HTTP from the tests: the status of a request (Flower's dashboard and health check)."""

from __future__ import annotations

import urllib.error
import urllib.request
from base64 import b64encode


def http_status(url: str, auth: str | None = None) -> int:
    """The status of GET `url`, with basic auth `user:password` if given; HTTP errors included."""
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
