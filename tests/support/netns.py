"""Hosts made of Linux network namespaces: a broker host and worker hosts on one private network.

    broker namespace: bridge <tag>br at 10.X.Y.1/24; one veth end per host is a port of it
    host namespaces:  veth end at 10.X.Y.<n>/24, link to the broker's bridge
    root namespace:   veth end at 10.X.Y.254/24, so the test process reaches the broker too

Every name carries a tag unique to the run (namespaces `ccw-<tag>-<host>`, interfaces `c<tag><n>`,
15 characters at most), and the /24 is one no route of the root namespace uses. Deleting a
namespace deletes the veth pairs that have an end in it, the root one included; `close()` also
deletes them by name. Needs root and iproute2's `ip` (the `netns` tool of tools.py).
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

IP = shutil.which("ip") or "/usr/sbin/ip"


def run(*args: str, netns: str = "") -> str:
    """`ip [-n NS] ARGS`; raise with ip's own message when it fails."""
    command = [IP, *(["-n", netns] if netns else []), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done.stdout


def problem(paths: dict[str, str]) -> str | None:
    """Why namespaces cannot be made here (not root, no CAP_SYS_ADMIN, ...), or None."""
    name = f"ccw-probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    ip = paths.get("ip", IP)
    checks = ([ip, "netns", "add", name], [ip, "netns", "exec", name, ip, "link", "show", "lo"])
    try:
        for command in checks:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
            if done.returncode != 0:
                return f"`{' '.join(command[:3])}` failed: {done.stderr.strip()[:200]}"
    finally:
        subprocess.run([ip, "netns", "delete", name], capture_output=True, timeout=30, check=False)
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A 10.x.y.0/24 that overlaps no route or address of the root namespace."""
    words = run("-4", "route", "show", "table", "all").split()
    used = [ipaddress.ip_network(word, strict=False) for word in words if _is_network(word)]
    for _ in range(200):
        subnet = ipaddress.IPv4Network(
            f"10.{random.randint(128, 254)}.{random.randint(0, 254)}.0/24"
        )
        if not any(subnet.overlaps(other) for other in used):
            return subnet
    raise RuntimeError("no free 10.x.y.0/24 for the test network")


def _is_network(word: str) -> bool:
    try:
        ipaddress.ip_network(word, strict=False)
    except ValueError:
        return False
    return True


@dataclass
class Host:
    name: str  # the host's name in the test ("broker", "a", "b")
    netns: str
    address: str  # on the test network
    link: str = ""  # its end of the veth to the broker's bridge (none for the broker)

    def exec_prefix(self) -> list[str]:
        """Run a command on this host: `ip netns exec <ns> <command...>` (exec, same PID)."""
        return [IP, "netns", "exec", self.netns]


@dataclass
class Network:
    """The broker host, the worker hosts by name, and the root namespace's address."""

    tag: str
    subnet: ipaddress.IPv4Network
    broker: Host
    hosts: dict[str, Host] = field(default_factory=dict)
    root_address: str = ""
    root_link: str = ""
    _made: list[str] = field(default_factory=list)  # namespaces to delete

    @classmethod
    def create(cls, host_names: Sequence[str]) -> Network:
        tag = uuid.uuid4().hex[:8]
        subnet = _free_subnet()
        addresses = [str(address) for address in subnet.hosts()]
        broker = Host("broker", f"ccw-{tag}-broker", addresses[0])
        network = cls(tag, subnet, broker)
        try:
            network._build(host_names, addresses)
        except BaseException:
            network.close()
            raise
        return network

    def _build(self, host_names: Sequence[str], addresses: list[str]) -> None:
        prefix = f"/{self.subnet.prefixlen}"
        bridge = f"c{self.tag}br"
        self._add_netns(self.broker.netns)
        run("link", "add", bridge, "type", "bridge", netns=self.broker.netns)
        run("addr", "add", self.broker.address + prefix, "dev", bridge, netns=self.broker.netns)
        run("link", "set", bridge, "up", netns=self.broker.netns)
        for number, name in enumerate(host_names, start=1):
            host = Host(name, f"ccw-{self.tag}-{name}", addresses[number], f"c{self.tag}h{number}")
            self._add_netns(host.netns)
            run("link", "set", "lo", "up", netns=host.netns)
            self._veth(host.link, host.netns, host.address + prefix, f"c{self.tag}b{number}")
            self.hosts[name] = host
        self.root_address, self.root_link = addresses[-1], f"c{self.tag}r"
        self._veth(self.root_link, "", self.root_address + prefix, f"c{self.tag}br0")

    def _add_netns(self, netns: str) -> None:
        run("netns", "add", netns)
        self._made.append(netns)

    def _veth(self, link: str, netns: str, address: str, bridge_port: str) -> None:
        """A veth pair: `link` with `address` in `netns` ("" for root), its peer on the bridge."""
        where = ["netns", netns] if netns else []
        run("link", "add", link, *where, "type", "veth", "peer", "name", bridge_port,
            "netns", self.broker.netns)  # fmt: skip
        run("link", "set", bridge_port, "master", f"c{self.tag}br", "up", netns=self.broker.netns)
        run("addr", "add", address, "dev", link, netns=netns)
        run("link", "set", link, "up", netns=netns)

    def cut(self, name: str) -> None:
        """Take the host's link down, in its own namespace: its packets go nowhere from now on,
        and nothing tells the other end (no FIN, no RST), as when a host's network fails."""
        host = self.hosts[name]
        run("link", "set", host.link, "down", netns=host.netns)

    def close(self) -> None:
        """Delete the namespaces (their veth pairs go with them) and the root end by name.
        Stop the processes inside first: a namespace lives on while a process is in it."""
        for netns in reversed(self._made):
            subprocess.run([IP, "netns", "delete", netns], capture_output=True, timeout=30)
        if self.root_link:
            subprocess.run([IP, "link", "delete", self.root_link], capture_output=True, timeout=30)
        self._made.clear()
