"""Kubernetes: the manifests validate, and their commands and probes work against real processes.

No cluster is needed: kubernetes-validate checks every manifest against the API schemas, and the
worker, beat and Flower run locally with the command, environment and probes read from the
manifests (tests/support/kubernetes.py says what is substituted).
"""

from __future__ import annotations

import copy
import functools
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import psutil
import pytest
import yaml

from .support import tools
from .support.kubernetes import (
    KUSTOMIZATION,
    LocalContainer,
    Manifests,
    ProbeResult,
    http_get,
    local_container,
    probe_passes,
    quantity_bytes,
)
from .support.processes import ManagedProcess, wait_until
from .support.redis_server import free_port, start_private_redis
from .support.render import DEFAULTS, RENDER_MATRIX, Project
from .support.stack import Namespace, Stack

VALIDATE = str(Path(sys.executable).with_name("kubernetes-validate"))
# The oldest version we claim: probe-level terminationGracePeriodSeconds is GA from 1.28. The
# newest is the validator's default, the latest schemas it ships.
OLDEST_KUBERNETES = "1.28.0"

K8S = ["kubernetes"]
STATIC_SETS: dict[str, dict[str, Any]] = {
    "defaults": DEFAULTS,
    "acme-8-processes": {
        "package_path": "acme.jobs",
        "project_name": "Acme Jobs",
        "deploy_targets": K8S,
        "worker_processes": "8",
        "flower_port": "8080",
    },
    "rabbitmq-rpc": {"broker": "rabbitmq", "deploy_targets": K8S},
    "no-results": {"result_backend": "none", "deploy_targets": K8S},
    "postgresql-results": {"result_backend": "postgresql"},  # the render test's set
    "existing-repo": {
        "new_project": False,
        "package_path": "_Internal.jobs",
        "deploy_targets": [*K8S, "docker"],
    },
    "long-name": {"distribution_name": "document-processing-service-for-the-" * 2 + "x"},
}
SECRET_KEYS = {"CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "FLOWER_BASIC_AUTH"}
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")  # Service names are DNS-1035 labels
CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@'\"]*:[^/\s@'\"<]+@")
EXPORTER_PORT = 9808  # the exporter's Service, {k8s_name}-metrics (docs/deploy-kubernetes.md)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(params=list(STATIC_SETS))
def manifests(request: pytest.FixtureRequest, render_project: Callable[..., Project]) -> Manifests:
    return Manifests.load(render_project(**STATIC_SETS[request.param]))


def kustomize(directory: Path) -> str:
    """`kubectl kustomize`: what `kubectl apply -k` would send."""
    return subprocess.run(
        [tools.executable("kubectl"), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def validate(paths: list[Path], version: str | None = None) -> tuple[int, str]:
    """kubernetes-validate --strict: unknown fields fail too. Without a version, its newest."""
    args = [VALIDATE, "--strict", *(["-k", version] if version else []), *map(str, paths)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    return done.returncode, done.stdout + done.stderr


# -- the manifests ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, None], ids=["oldest", "newest"])
def test_manifests_pass_kubernetes_validate(manifests: Manifests, version: str | None) -> None:
    # kustomization.yaml is not an API resource (the validator would only warn that it has no
    # schema for it): test_kustomization_* check it.
    paths = [manifests.directory / name for name in manifests.resources]
    code, output = validate(paths, version)
    assert code == 0, output
    # A resource without a schema is only a warning: every file must have passed, none skipped.
    assert "WARN" not in output and "ERROR" not in output, output
    for name in manifests.resources:
        assert re.search(rf"{re.escape(name)} passed for resource", output), output


def test_kustomization_lists_every_manifest(manifests: Manifests) -> None:
    kustomization = manifests.kustomization
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(manifests.resources)


@pytest.mark.tool("kubectl")
def test_kubectl_kustomize_builds_the_same_valid_resources(
    manifests: Manifests, tmp_path: Path
) -> None:
    built = kustomize(manifests.directory)
    (tmp_path / "built.yaml").write_text(built)
    code, output = validate([tmp_path / "built.yaml"])
    assert code == 0 and "WARN" not in output, output
    names = sorted((r["kind"], r["metadata"]["name"]) for r in yaml.safe_load_all(built))
    expected = sorted((r["kind"], r["metadata"]["name"]) for r in manifests.resources.values())
    assert names == expected


def test_names_and_references_resolve(manifests: Manifests) -> None:
    for resource in manifests.resources.values():
        name = resource["metadata"]["name"]
        assert DNS_LABEL.match(name) and len(name) <= 63, name
        for value in resource["metadata"].get("labels", {}).values():
            assert len(value) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", value)
    secret_name, secret_keys = manifests.documented_secret()
    assert set(secret_keys) <= SECRET_KEYS and "CELERY_BROKER_URL" in secret_keys
    assert ("CELERY_RESULT_BACKEND" in secret_keys) == (
        manifests.answers["result_backend"] in ("redis", "postgresql")
    )
    configmaps = {r["metadata"]["name"] for r in manifests.of_kind("ConfigMap")}
    for component in ("worker", "beat", "flower", "metrics"):
        deployment = manifests.deployment(component)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        container = manifests.container(component)
        refs = container["envFrom"]
        assert {ref["configMapRef"]["name"] for ref in refs if "configMapRef" in ref} <= configmaps
        whole = [ref["secretRef"]["name"] for ref in refs if "secretRef" in ref]
        keys = {
            variable["valueFrom"]["secretKeyRef"]["name"]: variable["valueFrom"]["secretKeyRef"]
            for variable in container.get("env", [])
            if "valueFrom" in variable
        }
        if component == "flower":
            assert whole == [secret_name]  # Flower: the broker URL and its credentials
        else:
            # Worker and beat: the broker keys only, never Flower's password.
            assert whole == [] and list(keys) == [secret_name], component
    for component in ("worker", "beat"):
        keys_read = {
            variable["valueFrom"]["secretKeyRef"]["key"]
            for variable in manifests.container(component).get("env", [])
            if "valueFrom" in variable
        }
        assert keys_read == set(secret_keys) - {"FLOWER_BASIC_AUTH"}, component
    # The exporter: the broker URL only (it reads no results).
    exporter_env = manifests.container("metrics").get("env", [])
    assert [v["valueFrom"]["secretKeyRef"]["key"] for v in exporter_env if "valueFrom" in v] == [
        "CELERY_BROKER_URL"
    ]
    [hpa] = manifests.of_kind("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (
        "Deployment",
        manifests.deployment("worker")["metadata"]["name"],
    )
    services = {component_of(r): r for r in manifests.of_kind("Service")}
    assert sorted(services) == ["flower", "metrics"]
    expected_ports = {"flower": int(manifests.answers["flower_port"]), "metrics": EXPORTER_PORT}
    for component, service in services.items():
        labels = manifests.deployment(component)["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert service["spec"]["type"] == "ClusterIP", "no authentication on a public address"
        ports = {p["name"]: p["containerPort"] for p in manifests.container(component)["ports"]}
        [service_port] = service["spec"]["ports"]
        assert (
            ports[service_port["targetPort"]] == service_port["port"] == expected_ports[component]
        )
    # The name KEDA's ScaledObjects (deploy/kubernetes-keda) call: <name>-metrics, port 9808.
    name = manifests.deployment("worker")["metadata"]["labels"]["app.kubernetes.io/name"]
    assert services["metrics"]["metadata"]["name"] == f"{name}-metrics"
    exporter = manifests.deployment("metrics")
    assert exporter["spec"]["replicas"] == 1
    annotations = exporter["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(EXPORTER_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"
    command = manifests.container("metrics")["command"]
    assert command[-2:] == ["metrics", f"--port={EXPORTER_PORT}"], command


def test_image_is_the_one_the_dockerfile_builds(manifests: Manifests) -> None:
    images = {manifests.container(c)["image"] for c in ("worker", "beat", "flower", "metrics")}
    [image] = images
    name, tag = image.rsplit(":", 1)
    assert tag == "latest"
    kustomization = (manifests.directory / KUSTOMIZATION).read_text()
    assert f"#   - name: {name}\n" in kustomization  # the images: example renames this one
    root = manifests.directory.parents[1]
    for dockerfile in (root / "Dockerfile", root / "Dockerfile.workers"):
        if dockerfile.exists():
            assert f"docker build -t {name} " in dockerfile.read_text()


def component_of(resource: dict[str, Any]) -> str:
    return str(resource["metadata"]["labels"]["app.kubernetes.io/component"])


def pool_processes(container: dict[str, Any], configmap: dict[str, str]) -> int:
    """A worker container's pool processes: its --concurrency, else the ConfigMap's."""
    flags = [arg for arg in container["command"] if arg.startswith("--concurrency=")]
    return int(flags[0].split("=")[1] if flags else configmap["CELERY_WORKER_CONCURRENCY"])


def test_configmap_holds_known_settings_and_no_secret(manifests: Manifests) -> None:
    [configmap] = manifests.of_kind("ConfigMap")
    data = configmap["data"]
    root = manifests.directory.parents[1]
    [example_file] = [
        root / n for n in (".env.example", ".env.workers.example") if (root / n).exists()
    ]
    example = example_file.read_text()
    documented = set(re.findall(r"^(CELERY_[A-Z_]+)=", example, re.MULTILINE))
    assert set(data) <= documented, set(data) - documented
    assert data["CELERY_WORKER_CONCURRENCY"] == str(manifests.answers["worker_processes"])
    # Pool processes are replaced before the pod's memory limit is reached: each may grow to the
    # per-child bound, and the main process keeps at least 128 MiB.
    per_child = int(data["CELERY_WORKER_MAX_MEMORY_PER_CHILD"]) * 1024
    for component in ("worker", "worker-urgent"):
        if not [d for d in manifests.of_kind("Deployment") if component_of(d) == component]:
            continue
        container = manifests.container(component)
        processes = pool_processes(container, data)
        limit = quantity_bytes(container["resources"]["limits"]["memory"])
        assert processes * per_child + 128 * 2**20 <= limit, component
    assert not SECRET_KEYS & set(data)
    assert not [value for value in data.values() if "://" in value]


def test_no_manifest_holds_a_secret_value(manifests: Manifests) -> None:
    assert not manifests.of_kind("Secret"), "ship no Secret: its values would be a default password"
    for path in manifests.directory.iterdir():
        text = path.read_text()
        assert not CREDENTIALS_IN_URL.search(text), (
            f"{path.name}: {CREDENTIALS_IN_URL.search(text)}"
        )
        assert not re.search(r"FLOWER_BASIC_AUTH=['\"]?\w+:\w", text), path.name
    for component in ("worker", "beat", "flower", "metrics"):
        # A secret key in `env:` only as a reference to the Secret, never as a value.
        literal = {v["name"] for v in manifests.container(component).get("env", []) if "value" in v}
        assert not literal & SECRET_KEYS, component


def test_beat_runs_alone_and_the_worker_outlasts_its_tasks(manifests: Manifests) -> None:
    beat = manifests.deployment("beat")["spec"]
    assert beat["replicas"] == 1
    assert beat["strategy"] == {"type": "Recreate"}
    [hpa] = manifests.of_kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] != manifests.deployment("beat")["metadata"]["name"]
    [metric] = hpa["spec"]["metrics"]
    assert (metric["type"], metric["resource"]["name"]) == ("Resource", "cpu")
    assert "replicas" not in manifests.deployment("worker")["spec"], "the autoscaler owns replicas"
    # SIGTERM = warm shutdown: Kubernetes must wait at least the hard time limit before SIGKILL.
    [configmap] = manifests.of_kind("ConfigMap")
    time_limit = int(configmap["data"]["CELERY_TASK_TIME_LIMIT"])
    assert manifests.pod("worker")["terminationGracePeriodSeconds"] >= time_limit


def test_pods_are_hardened_and_write_only_to_volumes(manifests: Manifests) -> None:
    [configmap] = manifests.of_kind("ConfigMap")
    data = configmap["data"]
    writes = {
        "worker": [data["CELERY_WORKER_HEARTBEAT_FILE"]],
        "beat": [data["CELERY_BEAT_HEARTBEAT_FILE"], data["CELERY_BEAT_SCHEDULE_FILENAME"]],
        "flower": [],
        "metrics": [],
    }
    for component, paths in writes.items():
        pod = manifests.pod(component)
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] > 0, component
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, component
        assert pod["automountServiceAccountToken"] is False, component
        container = manifests.container(component)
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }, component
        resources = container["resources"]
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= resources[bound].keys(), (component, bound)
        assert quantity_bytes(resources["requests"]["memory"]) <= quantity_bytes(
            resources["limits"]["memory"]
        )
        # The root filesystem is read-only: whatever the process writes must be on a volume.
        mounts = [m["mountPath"] for m in container["volumeMounts"]]
        assert "/tmp" in mounts, component
        for path in paths:
            assert any(path.startswith(mount + "/") for mount in mounts), (component, path)


def test_probes_name_the_configured_heartbeat_files(manifests: Manifests) -> None:
    [configmap] = manifests.of_kind("ConfigMap")
    data = configmap["data"]
    interval = int(data["CELERY_HEARTBEAT_INTERVAL"])
    package = manifests.answers["package_path"]
    files = {
        "worker": data["CELERY_WORKER_HEARTBEAT_FILE"],
        "beat": data["CELERY_BEAT_HEARTBEAT_FILE"],
    }
    for component, heartbeat in files.items():
        container = manifests.container(component)
        assert {"startupProbe", "livenessProbe"} <= container.keys(), component
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if kind not in container:
                continue
            command = container[kind]["exec"]["command"]
            assert command[:4] == ["python", "-m", f"{package}.health", heartbeat], command
            assert command[4] == "--max-age"
            max_age = float(command[5])
            # A few missed touches, not one late timer tick, make the process unhealthy.
            assert max_age >= 2 * interval and max_age % interval == 0, (component, kind)
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = manifests.container("flower")[kind]["httpGet"]
        assert (get["path"], get["port"]) == ("/healthcheck", "http")
    # The exporter: ready while it reads the broker, alive while it serves (test_metrics_probes_*).
    exporter = manifests.container("metrics")
    assert "startupProbe" not in exporter
    paths = {kind: exporter[f"{kind}Probe"]["httpGet"] for kind in ("readiness", "liveness")}
    assert {kind: (get["path"], get["port"]) for kind, get in paths.items()} == {
        "readiness": ("/healthz", "metrics"),
        "liveness": ("/metrics", "metrics"),
    }


# -- autoscaling with KEDA (deploy/kubernetes-keda) -------------------------------------------

# KEDA's ScaledObject CRD, vendored with its version and source (tests/data/keda/README.md).
KEDA_CRD = Path(__file__).parent / "data" / "keda" / "keda.sh_scaledobjects.yaml"
# Two workers (defaults, RabbitMQ), a main worker on two queues, and one worker on all queues.
KEDA_SETS = ["defaults", "rabbitmq", "three-queues", "one-queue"]


def strict(schema: Any) -> Any:
    """An openAPIV3Schema as kubectl applies it (--validate=strict, its default): a field that
    the schema does not name is an error, where JSON Schema would let it through."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: strict(sub) for name, sub in out["properties"].items()}
        out.setdefault("additionalProperties", False)
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = strict(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [strict(sub) for sub in out[key]]
    return out


@functools.cache
def scaled_object_schema() -> tuple[str, jsonschema.Draft7Validator]:
    """The apiVersion that KEDA stores ScaledObjects in, and a validator for its schema."""
    crd = yaml.safe_load(KEDA_CRD.read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
    schema = strict(version["schema"]["openAPIV3Schema"])
    jsonschema.Draft7Validator.check_schema(schema)
    return f"{crd['spec']['group']}/{version['name']}", jsonschema.Draft7Validator(schema)


def schema_errors(resource: dict[str, Any]) -> list[str]:
    api_version, validator = scaled_object_schema()
    errors = []
    if resource.get("apiVersion") != api_version:
        errors.append(f"apiVersion {resource.get('apiVersion')!r}, not {api_version!r}")
    for error in validator.iter_errors(resource):
        errors.append(f"{'/'.join(map(str, error.absolute_path))}: {error.message}")
    return errors


def all_queues(answers: dict[str, Any]) -> list[str]:
    return [name.strip() for name in answers["queues"].split(",")]


def worker_queues(deployment: dict[str, Any], answers: dict[str, Any]) -> list[str]:
    """The queues a worker Deployment's command consumes: its --queues/-Q, else every queue
    (routing.py declares them all in task_queues)."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    command = [*container["command"], *container.get("args", [])]
    for position, arg in enumerate(command):
        if arg.startswith("--queues="):
            return str(arg.split("=", 1)[1]).split(",")
        if arg == "-Q":
            return str(command[position + 1]).split(",")
    return all_queues(answers)


def held_per_pod(deployment: dict[str, Any], configmap: dict[str, str]) -> int:
    """Tasks one busy pod holds reserved: its pool processes x the prefetch multiplier."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    processes = pool_processes(container, configmap)
    return processes * int(configmap["CELERY_WORKER_PREFETCH_MULTIPLIER"])


def keda_directory(manifests: Manifests) -> Path:
    return manifests.directory.parent / "kubernetes-keda"


@pytest.mark.tool("kubectl")
@pytest.mark.parametrize("answer_set", KEDA_SETS)
def test_keda_variant_scales_each_worker_on_the_backlog_of_its_own_queues(
    answer_set: str, render_project: Callable[..., Project]
) -> None:
    project = render_project(**RENDER_MATRIX[answer_set])
    base = Manifests.load(project)
    directory = keda_directory(base)
    kustomization = yaml.safe_load((directory / KUSTOMIZATION).read_text())
    files = {p.name for p in directory.glob("*.yaml") if p.name != KUSTOMIZATION}
    assert sorted(kustomization["resources"]) == sorted({"../kubernetes", *files})
    built = list(yaml.safe_load_all(kustomize(directory)))

    def of_kind(kind: str) -> dict[str, dict[str, Any]]:
        return {r["metadata"]["name"]: r for r in built if r["kind"] == kind}

    # The base as it is, less its HPA, plus one ScaledObject per worker Deployment.
    [hpa] = base.of_kind("HorizontalPodAutoscaler")
    expected = {(r["kind"], r["metadata"]["name"]) for r in base.resources.values()}
    expected.remove(("HorizontalPodAutoscaler", hpa["metadata"]["name"]))
    workers = {
        name: deployment
        for name, deployment in of_kind("Deployment").items()
        if component_of(deployment).startswith("worker")
    }
    # One queue: one worker consumes it; more: the urgent queue has a worker of its own.
    assert len(workers) == min(2, len(all_queues(project.answers))), sorted(workers)
    expected |= {("ScaledObject", name) for name in workers}
    assert {(r["kind"], r["metadata"]["name"]) for r in built} == expected
    namespace = kustomization["namespace"]
    assert {r["metadata"]["namespace"] for r in built} == {namespace}

    [configmap_resource] = base.of_kind("ConfigMap")
    configmap = configmap_resource["data"]
    service = f"{base.deployment('worker')['metadata']['labels']['app.kubernetes.io/name']}-metrics"
    scaled_objects = of_kind("ScaledObject")
    targets = sorted(so["spec"]["scaleTargetRef"]["name"] for so in scaled_objects.values())
    assert targets == sorted(workers), "exactly one ScaledObject per worker Deployment"
    for name, scaled in scaled_objects.items():
        assert schema_errors(scaled) == [], name
        spec = scaled["spec"]
        target = spec["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
        deployment = workers[target["name"]]
        assert component_of(scaled) == component_of(deployment)
        # KEDA owns the count: a `replicas:` would reset it on every apply.
        assert "replicas" not in deployment["spec"], name
        [backlog] = [t for t in spec["triggers"] if t["type"] == "metrics-api"]
        url = urllib.parse.urlsplit(backlog["metadata"]["url"])
        # KEDA calls it from its own namespace: the host names the workers' namespace.
        assert (url.scheme, url.hostname) == ("http", f"{service}.{namespace}.svc"), url
        assert (url.port, url.path) == (EXPORTER_PORT, "/backlog"), url
        queues = urllib.parse.parse_qs(url.query, strict_parsing=True)["queues"]
        assert queues[0].split(",") == worker_queues(deployment, project.answers), (name, url)
        assert backlog["metadata"]["valueLocation"] == "backlog"
        # AverageValue (replicas = backlog / target) is also what `fallback` needs up to KEDA 2.17.
        assert backlog["metricType"] == "AverageValue"
        # N busy pods with nothing waiting must not ask for more than N pods.
        target_value = int(backlog["metadata"]["targetValue"])
        assert target_value >= held_per_pod(deployment, configmap), name
        assert spec["minReplicaCount"] >= 1, "scaling to zero is the user's choice, not ours"
        assert spec["minReplicaCount"] <= spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
        assert spec["fallback"]["failureThreshold"] >= 1
        scale_down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
        assert scale_down == hpa["spec"]["behavior"]["scaleDown"], "drain one pod at a time"
        if component_of(deployment) == "worker":
            # What the plain HPA does, KEDA's HPA does too: the same bounds and CPU target.
            assert target_value == held_per_pod(deployment, configmap)
            bounds = (spec["minReplicaCount"], spec["maxReplicaCount"])
            assert bounds == (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])
            [cpu] = [t for t in spec["triggers"] if t["type"] == "cpu"]
            [metric] = hpa["spec"]["metrics"]
            utilization = metric["resource"]["target"]["averageUtilization"]
            assert cpu["metricType"] == "Utilization"
            assert cpu["metadata"] == {"value": str(utilization)}
    # The exporter's Service (metrics-service.yaml), on the URL's port.
    services = of_kind("Service")
    assert EXPORTER_PORT in [p["port"] for p in services[service]["spec"]["ports"]]


@pytest.mark.tool("kubectl")
def test_keda_namespace_is_set_once_and_reaches_every_exporter_url(
    render_project: Callable[..., Project], tmp_path: Path
) -> None:
    project = render_project(**DEFAULTS)
    deploy = shutil.copytree(project.path / "deploy", tmp_path / "deploy")
    kustomization = deploy / "kubernetes-keda" / KUSTOMIZATION
    text = kustomization.read_text()
    assert text.count("\nnamespace: default\n") == 1
    kustomization.write_text(text.replace("\nnamespace: default\n", "\nnamespace: jobs-prod\n"))
    built = list(yaml.safe_load_all(kustomize(deploy / "kubernetes-keda")))
    assert {r["metadata"]["namespace"] for r in built} == {"jobs-prod"}
    urls = [
        trigger["metadata"]["url"]
        for r in built
        if r["kind"] == "ScaledObject"
        for trigger in r["spec"]["triggers"]
        if trigger["type"] == "metrics-api"
    ]
    name = Manifests.load(project).deployment("worker")["metadata"]["labels"][
        "app.kubernetes.io/name"
    ]
    host = f"{name}-metrics.jobs-prod.svc"
    assert len(urls) == 2 and all(urllib.parse.urlsplit(u).hostname == host for u in urls), urls


def misspell_field(spec: dict[str, Any]) -> None:
    spec["pollingIntervall"] = spec.pop("pollingInterval")


def number_where_a_string_is_due(spec: dict[str, Any]) -> None:
    spec["triggers"][0]["metadata"]["targetValue"] = 2  # trigger metadata values are strings


def string_where_a_number_is_due(spec: dict[str, Any]) -> None:
    spec["maxReplicaCount"] = "4"


def drop_required_field(spec: dict[str, Any]) -> None:
    del spec["fallback"]["replicas"]


@pytest.mark.parametrize(
    ("breakage", "field"),
    [
        (misspell_field, "pollingIntervall"),
        (number_where_a_string_is_due, "targetValue"),
        (string_where_a_number_is_due, "maxReplicaCount"),
        (drop_required_field, "replicas"),
    ],
    ids=["misspelled-field", "number-for-string", "string-for-number", "missing-required"],
)
def test_keda_schema_rejects_a_broken_scaled_object(
    breakage: Callable[[dict[str, Any]], None],
    field: str,
    render_project: Callable[..., Project],
) -> None:
    """The validation bites: the rendered ScaledObject passes, and each mistake fails it."""
    manifests = Manifests.load(render_project(**DEFAULTS))
    path = keda_directory(manifests) / "worker-scaledobject.yaml"
    [scaled] = list(yaml.safe_load_all(path.read_text()))
    assert schema_errors(scaled) == []
    broken = copy.deepcopy(scaled)
    breakage(broken["spec"])
    errors = schema_errors(broken)
    assert errors and all(field in error for error in errors), errors


# -- the processes ----------------------------------------------------------------------------


def option(command: list[str], name: str) -> float:
    """The value after `name` in a probe's command line."""
    return float(command[command.index(name) + 1])


def print_table(title: str, rows: dict[str, dict[str, Any]]) -> None:
    """The results as a Markdown table (shown with pytest -s): one row per probe."""
    fates = list(dict.fromkeys(fate for row in rows.values() for fate in row))
    print(f"\n{title}\n| probe | " + " | ".join(fates) + " |")
    print("|---" * (len(fates) + 1) + "|")
    for probe, results in rows.items():
        print(f"| {probe} | " + " | ".join(str(results.get(fate, "n/a")) for fate in fates) + " |")


def group_rss(pid: int) -> int:
    main = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [main, *main.children(recursive=True)])


def memory_limit(container: LocalContainer) -> int:
    return quantity_bytes(container.spec["resources"]["limits"]["memory"])


def test_secret_keys_are_the_ones_the_processes_get(render_project: Callable[..., Project]) -> None:
    manifests = Manifests.load(render_project(**DEFAULTS))
    _, keys = manifests.documented_secret()
    assert set(keys) == SECRET_KEYS  # secret_values() gives the processes below exactly these


def secret_values(stack: Stack) -> dict[str, str]:
    """What `kubectl create secret generic` would hold: this test's broker and a fresh password."""
    values = {
        "CELERY_BROKER_URL": stack.namespace.broker_url,
        "CELERY_RESULT_BACKEND": stack.namespace.result_backend,
        "FLOWER_BASIC_AUTH": f"ops:{secrets.token_urlsafe(18)}",
    }
    assert values.keys() == SECRET_KEYS
    return values


def start(stack: Stack, container: LocalContainer, name: str, command: list[str]) -> ManagedProcess:
    process = stack.start(name, command, **container.env)
    assert process.args == command
    return process


def node_prefix(command: list[str]) -> str:
    [hostname] = [arg.split("=", 1)[1] for arg in command if arg.startswith("--hostname=")]
    assert hostname.endswith("@%h"), "a node name unique per pod (%h = pod name)"
    return hostname.split("@")[0]


class OwnRedis:
    """A redis-server of one test, which it may stop and start again on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.process, self.port = start_private_redis(workdir)

    def namespace(self) -> Namespace:
        base = f"redis://127.0.0.1:{self.port}"
        return Namespace(f"{base}/0", f"{base}/1")

    def stop(self) -> None:
        self.process.stop()

    def restart(self) -> None:
        old = self.process
        self.process = ManagedProcess(
            old.name, old.args, cwd=old.cwd, env=old.env, log_dir=old.log_path.parent
        ).start()


@pytest.fixture
def defaults(render_project: Callable[..., Project]) -> tuple[Project, Manifests]:
    project = render_project(**DEFAULTS)
    return project, Manifests.load(project)


@pytest.fixture
def stack_with_own_broker(
    defaults: tuple[Project, Manifests], tmp_path: Path
) -> Iterator[tuple[Stack, OwnRedis]]:
    (tmp_path / "own-redis").mkdir()
    redis = OwnRedis(tmp_path / "own-redis")
    stack = Stack(defaults[0], redis.namespace(), tmp_path / "own-stack")
    stack.log_dir.mkdir()
    yield stack, redis
    stack.close()
    redis.stop()


@pytest.fixture
def resumed() -> Iterator[list[ManagedProcess]]:
    """Processes a test SIGSTOPs: resumed at teardown, so that stopping them can work."""
    stalled: list[ManagedProcess] = []
    yield stalled
    for process in stalled:
        process.signal_main(signal.SIGCONT)


def test_urgent_tasks_start_at_once_while_long_tasks_fill_the_worker_pods(
    defaults: tuple[Project, Manifests], stack_factory: Callable[[Project], Stack], tmp_path: Path
) -> None:
    """The worker and worker-urgent containers, each run with its manifest's command and
    environment: health_check answers within a second while the worker's processes are busy with
    long tasks and more wait in the default queue."""
    project, manifests = defaults
    stack = stack_factory(project)
    secret = secret_values(stack)
    processes = {}
    for component in ("worker", "worker-urgent"):
        container = local_container(manifests, component, tmp_path / component, secret)
        name = node_prefix(container.command)
        processes[component] = start(stack, container, name, container.command)
    for process in processes.values():
        stack.wait_ready(process)
    measured = stack.probe("urgent_latency", long_tasks=4, seconds=8)
    assert measured["long_unfinished"] >= 2, measured
    assert set(measured["workers"]) == {stack.nodename(processes["worker-urgent"])}, measured
    assert max(measured["latencies"]) < 1.0, measured


@pytest.mark.long
def test_worker_and_beat_probes_live_stopped_stalled_and_without_broker(
    defaults: tuple[Project, Manifests],
    stack_factory: Callable[[Project], Stack],
    stack_with_own_broker: tuple[Stack, OwnRedis],
    tmp_path: Path,
    resumed: list[ManagedProcess],
) -> None:
    project, manifests = defaults
    # One pod to stop and one to stall (worker and beat each), and a worker whose broker goes away.
    stacks = {"to-stop": stack_factory(project), "to-stall": stack_factory(project)}
    stacks["to-lose-broker"], own_redis = stack_with_own_broker
    pods = {"to-stop": ("worker", "beat"), "to-stall": ("worker", "beat")}
    pods["to-lose-broker"] = ("worker",)
    containers: dict[tuple[str, str], LocalContainer] = {}
    processes: dict[tuple[str, str], ManagedProcess] = {}
    for pod, components in pods.items():
        for component in components:
            secret = secret_values(stacks[pod])
            container = local_container(manifests, component, tmp_path / pod, secret)
            name = node_prefix(container.command) if component == "worker" else component
            containers[pod, component] = container
            processes[pod, component] = start(stacks[pod], container, name, container.command)

    def probe(pod: str, component: str, kind: str) -> ProbeResult:
        stack = stacks[pod]
        return containers[pod, component].run_exec_probe(kind, stack.cwd, stack.env())

    # Started: the startup probe passes within its budget (period x failureThreshold), polled as
    # the kubelet does; the worker then also answers Celery's ping under its manifest name.
    for (pod, component), container in containers.items():
        startup = container.probe("startup")
        assert startup is not None, component
        budget = min(60.0, startup["periodSeconds"] * startup["failureThreshold"])

        def started(pod: str = pod, component: str = component) -> bool:
            process = processes[pod, component]
            assert process.running(), process.log()[-3000:]
            return probe(pod, component, "startup").code == 0

        wait_until(started, budget, interval=0.5)
    for (pod, component), process in processes.items():
        stack, container = stacks[pod], containers[pod, component]
        if component == "worker":
            stack.wait_ready(process)
            node = stack.nodename(process)
            stats = stack.control_app.control.inspect(destination=[node], timeout=5).stats()
            concurrency = int(container.env["CELERY_WORKER_CONCURRENCY"])
            assert stats[node]["pool"]["max-concurrency"] == concurrency  # the ConfigMap applies
        else:
            schedule = Path(container.env["CELERY_BEAT_SCHEDULE_FILENAME"])
            assert list(schedule.parent.iterdir()), "beat wrote no state in its volume"
        # What runs is the manifest's command, argument for argument (celery is a Python script,
        # so the kernel's command line starts with the interpreter).
        cmdline = psutil.Process(process.pid).cmdline()
        command = container.command
        assert Path(cmdline[-len(command)]).name == command[0], cmdline
        assert cmdline[-len(command) + 1 :] == command[1:], cmdline
        rss, limit = group_rss(process.pid), memory_limit(container)
        print(f"{component} ({pod}): {rss / 2**20:.0f} MiB RSS, limit {limit / 2**20:.0f} MiB")
        assert rss < limit, (pod, component)

    results: dict[str, dict[str, ProbeResult]] = {}
    for (pod, component), container in containers.items():
        for kind in container.probe_kinds():
            live = probe(pod, component, kind)
            assert live.code == 0, (pod, component, kind, live)
            results.setdefault(f"{component} {kind}", {})["live"] = live

    # Stopped: SIGTERM to the main process, as the kubelet sends it to PID 1. Stalled: SIGSTOP.
    # Broker down: the worker's Redis stops (the worker keeps running and reconnecting).
    began = time.monotonic()
    for component in pods["to-stop"]:
        processes["to-stop", component].signal_main(signal.SIGTERM)
        resumed.append(processes["to-stall", component])
        processes["to-stall", component].signal_main(signal.SIGSTOP)
    own_redis.stop()
    for component in pods["to-stop"]:
        assert processes["to-stop", component].wait(60) is not None, f"{component} did not stop"
    max_age = max(
        option(container.probe(kind)["exec"]["command"], "--max-age")  # type: ignore[index]
        for container in containers.values()
        for kind in container.probe_kinds()
    )
    time.sleep(max(0.0, began + max_age + 2 - time.monotonic()))
    fates = {"to-stop": "stopped", "to-stall": "stalled", "to-lose-broker": "broker down"}
    for (pod, component), container in containers.items():
        for kind in container.probe_kinds():
            results[f"{component} {kind}"][fates[pod]] = probe(pod, component, kind)
    assert processes["to-lose-broker", "worker"].running(), "a broker outage is no reason to exit"

    print_table(
        f"exec probes (exit codes; stopped, stalled, broker down for {max_age + 2:g} s)",
        {name: {fate: r.code for fate, r in row.items()} for name, row in results.items()},
    )
    for name, row in results.items():
        # Unhealthy for the right reason: health.py's verdict, not a crash of the probe itself.
        # A stopped worker removes its file; a stalled process, a stopped beat and a worker
        # without broker stop touching theirs.
        for fate, result in row.items():
            if fate == "live":
                continue
            if name == "worker liveness" and fate == "broker down":
                # Reconnecting on its own: no reason to restart the pod (--reconnect-grace).
                assert result.code == 0 and "reconnecting" in result.output, (name, fate, result)
                continue
            stopped_worker = name.startswith("worker") and fate == "stopped"
            reason = "does not exist" if stopped_worker else "last touched"
            assert result.code == 1 and reason in result.output, (name, fate, result)

    # Unstalled, or with its broker back, a process is healthy again: the verdict is not sticky.
    for component in pods["to-stall"]:
        processes["to-stall", component].signal_main(signal.SIGCONT)
    own_redis.restart()
    interval = float(containers["to-stall", "worker"].env["CELERY_HEARTBEAT_INTERVAL"])
    for component in pods["to-stall"]:
        recovered = lambda c=component: probe("to-stall", c, "liveness").code == 0  # noqa: E731
        wait_until(recovered, 2 * interval + 5)
    # Celery retries the broker at growing intervals (2, 4, 6 ... s): allow one more round.
    wait_until(lambda: probe("to-lose-broker", "worker", "readiness").code == 0, 60)


def test_flower_probe_answers_without_credentials_and_the_ui_needs_them(
    defaults: tuple[Project, Manifests],
    stack_factory: Callable[[Project], Stack],
    tmp_path: Path,
    resumed: list[ManagedProcess],
) -> None:
    project, manifests = defaults
    stack = stack_factory(project)
    values = secret_values(stack)
    container = local_container(manifests, "flower", tmp_path, values)
    # The one substitution besides the cluster's: a free port instead of the manifest's, so that
    # parallel tests do not collide. The probes' named port must be the one --port sets.
    port = free_port()
    [port_arg] = [arg for arg in container.command if arg.startswith("--port=")]
    kinds = container.probe_kinds()
    probes = {kind: container.probe(kind)["httpGet"] for kind in kinds}  # type: ignore[index]
    for get in probes.values():
        assert container.http_port(get["port"]) == int(port_arg.split("=")[1])
    command = [f"--port={port}" if arg == port_arg else arg for arg in container.command]
    flower = start(stack, container, "flower", command)

    def probe(kind: str) -> int | str:
        timeout = container.probe(kind).get("timeoutSeconds", 1)  # type: ignore[union-attr]
        return http_get(f"http://127.0.0.1:{port}{probes[kind]['path']}", timeout)

    def all_probes() -> dict[str, int | str]:
        # At once, as the kubelet runs them: a stalled Flower costs one timeout, not three.
        with ThreadPoolExecutor(len(kinds)) as pool:
            return dict(zip(kinds, pool.map(probe, kinds), strict=True))

    startup = container.probe("startup")
    assert startup is not None

    def started() -> bool:
        assert flower.running(), flower.log()[-3000:]
        return probe_passes(probe("startup"), http=True)

    wait_until(started, min(60.0, startup["periodSeconds"] * startup["failureThreshold"]))
    assert psutil.Process(flower.pid).cmdline()[-1] == f"--port={port}"
    rss = group_rss(flower.pid)
    print(f"\nflower: {rss / 2**20:.0f} MiB RSS, limit {memory_limit(container) / 2**20:.0f} MiB")
    assert rss < memory_limit(container)

    results: dict[str, dict[str, Any]] = {kind: {} for kind in kinds}
    for kind, code in all_probes().items():
        results[kind]["live"] = code
    # /healthcheck needs no credentials; the dashboard does, and takes the Secret's.
    assert http_get(f"http://127.0.0.1:{port}/", timeout=5) == 401
    assert http_get(f"http://127.0.0.1:{port}/", 5, auth=values["FLOWER_BASIC_AUTH"]) == 200

    resumed.append(flower)
    flower.signal_main(signal.SIGSTOP)
    for kind, code in all_probes().items():
        results[kind]["stalled"] = code
    flower.signal_main(signal.SIGCONT)
    assert probe_passes(probe("liveness"), http=True), "Flower answers again after the stall"
    flower.signal_main(signal.SIGTERM)
    # Flower finishes its inspect calls before it exits; on a loaded CI machine that once took
    # longer than 30 s (Kubernetes would SIGKILL it then, which loses nothing of Flower's).
    stopping = time.monotonic()
    stopped = flower.wait(90)
    assert stopped is not None, f"Flower did not stop on SIGTERM:\n{flower.log()[-3000:]}"
    print(f"flower stopped {time.monotonic() - stopping:.1f} s after SIGTERM")
    for kind, code in all_probes().items():
        results[kind]["stopped"] = code

    print_table(
        "Flower httpGet /healthcheck (status or error)",
        {
            f"flower {kind}": {f: row[f] for f in ("live", "stopped", "stalled")}
            for kind, row in results.items()
        },
    )
    for kind, row in results.items():
        assert row["live"] == 200, (kind, row)
        assert row["stopped"] == "refused", (kind, row)
        assert row["stalled"] == "timeout", (kind, row)


def test_metrics_probes_follow_the_broker_and_liveness_survives_its_outage(
    stack_with_own_broker: tuple[Stack, OwnRedis], tmp_path: Path
) -> None:
    """The exporter's container run with its manifest's command, environment and probes: ready
    while it reads the broker, unready (not dead) while the broker is away, ready again after."""
    stack, own_redis = stack_with_own_broker
    manifests = Manifests.load(stack.project)
    container = local_container(manifests, "metrics", tmp_path, secret_values(stack))
    assert container.env["CELERY_METRICS_ADDRESS"] == "0.0.0.0"
    [port_arg] = [arg for arg in container.command if arg.startswith("--port=")]
    kinds = container.probe_kinds()
    assert kinds == ["readiness", "liveness"]
    probes = {kind: container.probe(kind)["httpGet"] for kind in kinds}  # type: ignore[index]
    for get in probes.values():
        assert container.http_port(get["port"]) == int(port_arg.split("=")[1])
    # Substituted: a free port (parallel tests) and a 1 s interval (the default 15 s is slow here).
    port = free_port()
    command = [f"--port={port}" if arg == port_arg else arg for arg in container.command]
    exporter = stack.start("metrics", command, **container.env, CELERY_METRICS_INTERVAL="1")

    def probe(kind: str) -> int | str:
        timeout = container.probe(kind).get("timeoutSeconds", 1)  # type: ignore[union-attr]
        return http_get(f"http://127.0.0.1:{port}{probes[kind]['path']}", timeout)

    def verdicts() -> dict[str, int | str]:
        assert exporter.running(), exporter.log()[-3000:]
        return {kind: probe(kind) for kind in kinds}

    def reach(expected: dict[str, int | str]) -> dict[str, int | str]:
        wait_until(lambda: verdicts() == expected, 30, interval=0.2)
        return expected

    live: dict[str, int | str] = {"readiness": 200, "liveness": 200}
    results = {"live": reach(live)}
    rss = group_rss(exporter.pid)
    print(f"\nmetrics: {rss / 2**20:.0f} MiB RSS, limit {memory_limit(container) / 2**20:.0f} MiB")
    assert rss < memory_limit(container)
    own_redis.stop()
    # A broker outage: unready (out of the Service), but alive (no restart).
    results["broker down"] = reach({"readiness": 503, "liveness": 200})
    own_redis.restart()
    results["broker back"] = reach(live)
    exporter.signal_main(signal.SIGTERM)  # the kubelet's stop, to PID 1
    assert exporter.wait(30) == 0, exporter.log()[-3000:]
    results["stopped"] = {kind: probe(kind) for kind in kinds}
    assert results["stopped"] == {"readiness": "refused", "liveness": "refused"}
    print_table(
        "exporter httpGet probes (status or error)",
        {f"metrics {kind}": {fate: row[kind] for fate, row in results.items()} for kind in kinds},
    )
