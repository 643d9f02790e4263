"""Start a systemd unit's ExecStart the way systemd would, on a machine whose systemd runs no units.

Only what the template's units use is implemented; anything else raises, so a unit that grows a
setting this module does not know fails the tests instead of being run differently:

- specifiers %i %I %H %n %N %p %S %t %% (systemd.unit(5), "Specifiers"); %I is computed by
  `systemd-escape --unescape`, systemd's own implementation.
- ExecStart= and Environment= are split into words first, then each word's specifiers are resolved,
  in that order (src/core/load-fragment.c): an instance's escapes such as \\x2c stay as they are.
- EnvironmentFile= files override Environment=, later files override earlier ones, and a "-" prefix
  makes a missing file fine (systemd.exec(5), "Environment").
- WorkingDirectory=, UMask=, RuntimeDirectory= and StateDirectory= (with their Mode=, created before
  the start, announced in $RUNTIME_DIRECTORY / $STATE_DIRECTORY), and systemd's default PATH.

/etc, /run (%t) and /var/lib (%S) are directories under `root`, so nothing of the machine is touched.
Not emulated: User= (the processes run as the test's user) and the sandbox (seccomp, namespaces,
read-only file system): `systemd-analyze verify` and `security` check those settings statically.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import tools
from .processes import ManagedProcess

SPECIFIER = re.compile(r"%(.)")
# Characters whose systemd meaning (quoting, C escapes, $VARIABLE expansion) is not emulated here.
UNSUPPORTED_IN_COMMANDS = set("\"'\\$;")


def tool(name: str) -> str:
    """A systemd executable; the test is skipped (or failed, CCW_REQUIRE_SYSTEMD=1) without it."""
    return tools.executable("systemd", name)


def systemd_escape(text: str) -> str:
    return _run([tool("systemd-escape"), "--", text])


def systemd_unescape(text: str) -> str:
    return _run([tool("systemd-escape"), "--unescape", "--", text])


def _run(args: list[str]) -> str:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()


def default_path() -> str:
    """The PATH systemd gives services unless a unit sets one."""
    return _run([tool("systemd-path"), "search-binaries-default"])


@dataclass(frozen=True)
class UnitFile:
    path: Path
    entries: tuple[tuple[str, str, str], ...]  # (section, key, value) in file order

    @classmethod
    def read(cls, path: Path) -> UnitFile:
        entries = []
        section = ""
        for number, raw in enumerate(path.read_text().splitlines(), 1):
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            key, separator, value = line.partition("=")
            if not separator or not section or line.endswith("\\"):
                raise ValueError(f"{path}:{number}: not a KEY=VALUE line of a section: {raw!r}")
            entries.append((section, key.strip(), value.strip()))
        return cls(path, tuple(entries))

    def all(self, key: str, section: str = "Service") -> list[str]:
        return [v for s, k, v in self.entries if (s, k) == (section, key)]

    def get(self, key: str, section: str = "Service") -> str | None:
        """A single-valued setting: the last assignment wins, as in systemd."""
        values = self.all(key, section)
        return values[-1] if values else None

    def named(self, instance: str = "") -> str:
        """The unit's name: `name@instance.service` for a template `name@.service`."""
        stem, suffix = self.path.name.rsplit(".", 1)
        if stem.endswith("@") != bool(instance):
            raise ValueError(f"{self.path.name}: an instance is needed exactly for a template")
        return f"{stem}{instance}.{suffix}"


@dataclass(frozen=True)
class ServiceCommand:
    unit_name: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    umask: int


class Machine:
    """The file system of a pretend host: /etc, /run and /var/lib under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runtime = root / "run"  # %t for system units
        self.state = root / "var" / "lib"  # %S

    def host_path(self, absolute: str) -> Path:
        if not absolute.startswith("/"):
            raise ValueError(f"not an absolute path: {absolute}")
        return self.root / absolute.lstrip("/")

    def resolve(self, text: str, unit_name: str) -> str:
        stem = unit_name.rsplit(".", 1)[0]
        prefix, _, instance = stem.partition("@")
        values = {
            "i": instance,
            "n": unit_name,
            "N": stem,
            "p": prefix,
            "H": socket.gethostname(),
            "S": str(self.state),
            "t": str(self.runtime),
            "%": "%",
        }

        def one(match: re.Match[str]) -> str:
            letter = match.group(1)
            if letter == "I":
                return systemd_unescape(instance)
            if letter not in values:
                raise ValueError(f"specifier %{letter} is not emulated (in {text!r})")
            return values[letter]

        return SPECIFIER.sub(one, text)

    def prepare(self, unit: UnitFile, instance: str = "") -> ServiceCommand:
        """What systemd would exec for `unit` (instantiated with `instance`), set up to run here."""
        name = unit.named(instance)
        exec_start = unit.all("ExecStart")
        if len(exec_start) != 1 or exec_start[0][:1] in "-@:+!":
            raise ValueError(f"{name}: expected one ExecStart= without prefixes: {exec_start}")
        if UNSUPPORTED_IN_COMMANDS & set(exec_start[0]):
            raise ValueError(f"{name}: quoting, escapes and $VARIABLES are not emulated")
        argv = [self.resolve(word, name) for word in exec_start[0].split()]

        env = {"PATH": default_path()}
        env |= self._directories(unit, name)
        for value in unit.all("Environment"):
            if "\\" in value:
                raise ValueError(f"{name}: C escapes in Environment= are not emulated")
            for word in shlex.split(value):
                key, _, assigned = self.resolve(word, name).partition("=")
                env[key] = assigned
        for value in unit.all("EnvironmentFile"):
            optional = value.startswith("-")
            path = self.host_path(self.resolve(value.removeprefix("-"), name))
            if path.exists():
                env |= read_environment_file(path)
            elif not optional:
                raise FileNotFoundError(f"{name}: EnvironmentFile {path} does not exist")

        working_directory = unit.get("WorkingDirectory")
        if working_directory is None or working_directory[:1] in "-~":
            raise ValueError(f"{name}: expected an absolute WorkingDirectory=")
        return ServiceCommand(
            name, argv, Path(working_directory), env, int(unit.get("UMask") or "0022", 8)
        )

    def _directories(self, unit: UnitFile, name: str) -> dict[str, str]:
        """Create RuntimeDirectory= / StateDirectory= as systemd does before the start."""
        env = {}
        for kind, base, variable in (
            ("Runtime", self.runtime, "RUNTIME_DIRECTORY"),
            ("State", self.state, "STATE_DIRECTORY"),
        ):
            mode = int(unit.get(f"{kind}DirectoryMode") or "0755", 8)
            paths = []
            for value in unit.all(f"{kind}Directory"):
                for relative in value.split():
                    path = base / self.resolve(relative, name)
                    path.mkdir(parents=True, exist_ok=True)
                    path.chmod(mode)
                    paths.append(str(path))
            if paths:
                env[variable] = ":".join(paths)
        return env


def read_environment_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; # and ; comments; one pair of surrounding quotes is removed."""
    env = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, separator, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not separator or not key.isidentifier() or "\\" in value:
            raise ValueError(f"{path}:{number}: not emulated or not KEY=VALUE: {raw!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[key] = value
    return env


class ServiceProcess(ManagedProcess):
    """A ManagedProcess started with the unit's UMask=, as systemd applies it before exec."""

    def __init__(self, name: str, command: ServiceCommand, log_dir: Path) -> None:
        super().__init__(
            name,
            command.argv,
            cwd=command.cwd,
            env=command.env,
            log_dir=log_dir,
            umask=command.umask,
        )
