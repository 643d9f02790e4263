"""Monitoring: the alert rules pass promtool and their own unit tests, and the rules and the Grafana
dashboard ask only for metrics that the exporter (run against a real broker) and Flower serve."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import flower.events
import pytest
import yaml

from .support import tools
from .support.render import DEFAULTS, RABBITMQ, Project
from .support.stack import Stack

SETS = {"redis": DEFAULTS, "rabbitmq": RABBITMQ}
# PromQL words that look like metric names: functions, keywords, and the labels we group by.
PROMQL_WORDS = {
    "absent", "and", "by", "deriv", "histogram_quantile", "max", "min", "rate", "sum", "time",
    "le", "queue", "task", "type", "worker", "instance", "job", "or", "unless", "without",
}  # fmt: skip


@pytest.fixture(params=list(SETS))
def project(request: pytest.FixtureRequest, render_project: Callable[..., Project]) -> Project:
    return render_project(**SETS[request.param])


def monitoring_files(project: Project) -> tuple[Path, Path, Path]:
    rules = sorted((project.path / "deploy" / "prometheus").glob("*-alerts.yaml"))
    tests = sorted((project.path / "deploy" / "prometheus").glob("*-alerts.test.yaml"))
    dashboards = sorted((project.path / "deploy" / "grafana").glob("*-dashboard.json"))
    assert len(rules) == len(tests) == len(dashboards) == 1, (rules, tests, dashboards)
    return rules[0], tests[0], dashboards[0]


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads (label values and strings removed)."""
    bare = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]|\bby \([^)]*\)', " ", expression)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare))
    return {word for word in words if word not in PROMQL_WORDS}


def exporter_metrics(stack: Stack) -> str:
    """One reading of the exporter (`metrics --once`) with a message in a queue."""
    package = stack.project.package_path
    send = f"from {package}.tasks import health_check; health_check.delay()"
    subprocess.run([stack.python, "-c", send], cwd=stack.cwd, env=stack.env(), check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    done = subprocess.run(
        [stack.python, "-m", package, "metrics", "--once"],
        cwd=stack.cwd, env=stack.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def flower_metric_names() -> set[str]:
    """The metrics Flower's /metrics serves, read from Flower's own source."""
    names = set(re.findall(r"['\"](flower_[a-z_]+)['\"]", Path(flower.events.__file__).read_text()))
    assert names, "no metric found in flower.events"
    return names


@pytest.mark.tool("promtool")
def test_alert_rules_pass_promtool_and_their_unit_tests(
    project: Project, stack_factory: Callable[..., Stack]
) -> None:
    """`promtool check rules` and `promtool test rules` (which alerts fire, when, with which
    text) pass on the generated files; the exporter's output passes `promtool check metrics`; and
    every metric that a rule or a dashboard panel reads is one the exporter or Flower serves."""
    promtool = tools.executable("promtool")
    rules, rule_tests, dashboard = monitoring_files(project)
    checked = subprocess.run([promtool, "check", "rules", rules.name], cwd=rules.parent,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", rule_tests.name], cwd=rules.parent,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr

    exposition = exporter_metrics(stack_factory(project))
    linted = subprocess.run([promtool, "check", "metrics"], input=exposition,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert linted.returncode == 0, linted.stdout + linted.stderr
    served = set(re.findall(r"^# TYPE (\S+) ", exposition, re.MULTILINE))
    assert "celery_queue_ready_messages" in served and "celery_beat_lock_held" in served
    redis = project.broker == "redis"
    assert ("celery_queue_oldest_ready_age_seconds" in served) == redis
    flower = flower_metric_names()
    known = served | flower | {f"{name}_bucket" for name in flower}

    expressions = [
        rule["expr"] for group in yaml.safe_load(rules.read_text())["groups"]
        for rule in group["rules"]
    ]  # fmt: skip
    panels = json.loads(dashboard.read_text())["panels"]
    expressions += [target["expr"] for panel in panels for target in panel["targets"]]
    for expression in expressions:
        assert metric_names(expression) <= known, (expression, metric_names(expression) - known)
    # The dashboard shows Flower's task metrics beside ours; each panel has its own id.
    assert any(metric_names(e) & flower for e in expressions)
    assert len({panel["id"] for panel in panels}) == len(panels)
    assert ("CeleryTasksWaitingTooLong" in rules.read_text()) == redis
