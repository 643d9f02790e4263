"""Heartbeat probe: fresh file healthy, stale or missing file unhealthy."""

from __future__ import annotations

import os
import time
from pathlib import Path

from {{ package_path }}.health import (
    RECONNECTING,
    main,
    mark,
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


def test_a_worker_reconnecting_to_its_broker_is_alive_for_the_grace_only(tmp_path: Path) -> None:
    """Liveness (--reconnect-grace) passes while the worker reconnects; readiness does not."""
    path = tmp_path / "worker.alive"
    mark(path, RECONNECTING)
    two_minutes_ago = time.time() - 120
    os.utime(path, (two_minutes_ago, two_minutes_ago))
    assert main([str(path), "--max-age", "30", "--reconnect-grace", "600"]) == 0
    assert main([str(path), "--max-age", "30"]) == 1  # readiness
    assert main([str(path), "--max-age", "30", "--reconnect-grace", "60"]) == 1
    mark(path)  # consuming again
    os.utime(path, (two_minutes_ago, two_minutes_ago))
    assert main([str(path), "--max-age", "30", "--reconnect-grace", "600"]) == 1  # stalled
