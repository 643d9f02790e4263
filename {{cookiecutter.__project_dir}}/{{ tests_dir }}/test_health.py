"""Heartbeat probe: fresh file healthy, stale or missing file unhealthy."""

from __future__ import annotations

import os
import time
from pathlib import Path

from {{ package_path }}.health import (
    main,
    touch,
)


def test_fresh_heartbeat_is_healthy(tmp_path: Path) -> None:
    path = tmp_path / "worker.alive"
    touch(path)
    assert main([str(path), "--max-age", "30"]) == 0


def test_stale_or_missing_heartbeat_is_unhealthy(tmp_path: Path) -> None:
    path = tmp_path / "worker.alive"
    assert main([str(path)]) == 1
    touch(path)
    a_minute_ago = time.time() - 60
    os.utime(path, (a_minute_ago, a_minute_ago))
    assert main([str(path), "--max-age", "30"]) == 1
