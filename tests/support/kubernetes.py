"""A rendered deploy/kubernetes directory, and its containers and probes run as local processes.

Nothing here invents a command: argv, environment and probes are read from the manifests. Only what
the cluster would provide is substituted: each emptyDir mount path becomes a directory of the test,
the Secret's keys come from the test, and PATH (the image's) finds this environment's python and
celery.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .render import Project

BIN = str(Path(sys.executable).parent)
# The kubectl command that kustomization.yaml documents for the Secret (no Secret is shipped).
SECRET_COMMAND = re.compile(r"kubectl create secret generic (\S+)((?:.*\n#\s+--from-literal=.*)+)")
SECRET_KEY = re.compile(r"--from-literal=([A-Z0-9_]+)=")
KUSTOMIZATION = "kustomization.yaml"

Resource = dict[str, Any]


@dataclass
class Manifests:
    directory: Path
    resources: dict[str, Resource]  # file name -> the one resource in it
    kustomization: Resource
    answers: dict[str, Any]

    @classmethod
    def load(cls, project: Project) -> Manifests:
        directory = project.path / "deploy" / "kubernetes"
        resources = {}
        for path in sorted(directory.glob("*.yaml")):
            if path.name != KUSTOMIZATION:
                [resources[path.name]] = list(yaml.safe_load_all(path.read_text()))
        kustomization = yaml.safe_load((directory / KUSTOMIZATION).read_text())
        return cls(directory, resources, kustomization, project.answers)

    def of_kind(self, kind: str) -> list[Resource]:
        return [r for r in self.resources.values() if r["kind"] == kind]

    def deployment(self, component: str) -> Resource:
        [found] = [
            r
            for r in self.of_kind("Deployment")
            if r["metadata"]["labels"]["app.kubernetes.io/component"] == component
        ]
        return found

    def pod(self, component: str) -> Resource:
        return dict(self.deployment(component)["spec"]["template"]["spec"])

    def container(self, component: str) -> Resource:
        [container] = self.pod(component)["containers"]
        return dict(container)

    def configmap(self, name: str) -> dict[str, str]:
        [found] = [r for r in self.of_kind("ConfigMap") if r["metadata"]["name"] == name]
        return dict(found["data"])

    def documented_secret(self) -> tuple[str, list[str]]:
        """Name and keys of the `kubectl create secret generic` command in kustomization.yaml."""
        text = (self.directory / KUSTOMIZATION).read_text()
        match = SECRET_COMMAND.search(text)
        assert match, "kustomization.yaml does not document the kubectl create secret command"
        return match.group(1), SECRET_KEY.findall(match.group(2))


@dataclass(frozen=True)
class ProbeResult:
    code: int | str  # exit code, or "timeout"
    output: str


@dataclass
class LocalContainer:
    """One Deployment's container as a local process: its command, environment and probes."""

    name: str
    spec: Resource
    mounts: dict[str, Path]  # mountPath -> the test's directory for that emptyDir
    env: dict[str, str] = field(default_factory=dict)

    def local_path(self, value: str) -> str:
        """A path under a mount, moved to the test's directory; anything else unchanged."""
        for mount_path in sorted(self.mounts, key=len, reverse=True):
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                return str(self.mounts[mount_path]) + value[len(mount_path.rstrip("/")) :]
        return value

    @property
    def command(self) -> list[str]:
        return [*self.spec["command"], *self.spec.get("args", [])]

    def probe(self, kind: str) -> Resource | None:
        probe = self.spec.get(f"{kind}Probe")
        return dict(probe) if probe else None

    def probe_kinds(self) -> list[str]:
        return [kind for kind in ("startup", "readiness", "liveness") if self.probe(kind)]

    def run_exec_probe(self, kind: str, cwd: Path, base_env: dict[str, str]) -> ProbeResult:
        """Run an exec probe as the kubelet does: its exit code (or "timeout") and output."""
        probe = self.probe(kind)
        assert probe and "exec" in probe, f"{self.name} has no exec {kind} probe"
        argv = [self.local_path(arg) for arg in probe["exec"]["command"]]
        try:
            done = subprocess.run(
                argv,
                cwd=cwd,
                env={**base_env, **self.env},
                capture_output=True,
                text=True,
                timeout=probe.get("timeoutSeconds", 1),
                check=False,
            )
        except subprocess.TimeoutExpired:
            return ProbeResult("timeout", "")
        return ProbeResult(done.returncode, (done.stdout + done.stderr).strip())

    def http_port(self, port: int | str) -> int:
        """A probe's port, resolving a named one through the container's ports."""
        if isinstance(port, int):
            return port
        [number] = [p["containerPort"] for p in self.spec.get("ports", []) if p["name"] == port]
        return int(number)


def local_container(
    manifests: Manifests, component: str, root: Path, secret: dict[str, str]
) -> LocalContainer:
    """The container of `component` with the environment the ConfigMap and Secret give it."""
    pod = manifests.pod(component)
    spec = manifests.container(component)
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    mounts = {}
    for mount in spec.get("volumeMounts", []):
        assert "emptyDir" in volumes[mount["name"]], f"only emptyDirs are simulated: {mount}"
        local = root / component / mount["name"]
        local.mkdir(parents=True)
        mounts[mount["mountPath"]] = local
    container = LocalContainer(spec["name"], spec, mounts)
    secret_name, _ = manifests.documented_secret()
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(manifests.configmap(source["configMapRef"]["name"]))
        else:
            assert source["secretRef"]["name"] == secret_name, source
            env.update(secret)
    for variable in spec.get("env", []):
        if "valueFrom" in variable:
            reference = variable["valueFrom"]["secretKeyRef"]
            assert reference["name"] == secret_name, variable
            env[variable["name"]] = secret[reference["key"]]
        else:
            env[variable["name"]] = variable["value"]
    container.env = {key: container.local_path(value) for key, value in env.items()}
    # The image's PATH: its python and celery are this environment's.
    container.env["PATH"] = BIN + os.pathsep + os.environ.get("PATH", "")
    return container


def http_get(url: str, timeout: float, auth: str | None = None) -> int | str:
    """Status code of a GET, or why there is none ("refused", "timeout")."""
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionRefusedError):
            return "refused"
        if isinstance(error.reason, TimeoutError):
            return "timeout"
        raise
    except TimeoutError:
        return "timeout"


def probe_passes(result: int | str, http: bool = False) -> bool:
    """The kubelet's verdict: exit 0 for exec, 200-399 for httpGet."""
    if not isinstance(result, int):
        return False
    return 200 <= result < 400 if http else result == 0


def quantity_bytes(value: str) -> int:
    """A Kubernetes memory quantity (128Mi, 1Gi, 500M) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+)([KMG]i?)?", str(value))
    assert match, f"unsupported quantity {value!r}"
    return int(match.group(1)) * units.get(match.group(2) or "", 1)
