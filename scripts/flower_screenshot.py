"""Take docs/images/flower.png: Flower's workers dashboard for a freshly rendered project.

Renders the template with default answers, starts a private Redis on a free port, a worker for the
main queues, the urgent worker, and Flower with credentials (`python -m utils.workers.flower`), sends
a few sample tasks (one fails, one retries), and saves what headless Chromium shows once Flower has
counted them. Needs the `browser` tool of tests/support/tools.py (Debian's chromium and
chromium-driver) and the test group. Run: `.venv/bin/python scripts/flower_screenshot.py [--out X]`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
import urllib.request
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from copier.errors import DirtyLocalWarning  # noqa: E402

from tests.support.browser import headless_chromium, send_basic_auth  # noqa: E402
from tests.support.processes import ManagedProcess, wait_until  # noqa: E402
from tests.support.redis_server import free_port, scratch_with_private_redis  # noqa: E402
from tests.support.render import private_redis_env, render  # noqa: E402

OUTPUT = ROOT / "docs" / "images" / "flower.png"
CELERY = str(Path(sys.executable).with_name("celery"))
PACKAGE = "utils.workers"
APP = f"{PACKAGE}.celery_app"
TASKS = 14  # what send_tasks sends: Flower has counted them all before the picture is taken


def flower_api(base: str, path: str, credentials: str) -> Any:
    request = urllib.request.Request(base + path)
    token = base64.b64encode(credentials.encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def send_tasks() -> None:
    """Sample work for the dashboard: successes on both queues, a retry and a failure."""
    from utils.workers.tasks import (  # type: ignore[import-not-found]
        analyze_content,
        deliver_notification,
        generate_report,
        health_check,
        process_document,
    )

    results = [
        process_document.delay(f"doc-{n}", {"format": "text", "text": "x"}) for n in range(6)
    ]
    results += [analyze_content.delay("a few words to count " * 20) for _ in range(2)]
    results += [health_check.delay() for _ in range(3)]  # the urgent queue
    results += [generate_report.delay("daily")]
    results.append(deliver_notification.delay("ops@example.com", "disk almost full", fail_times=1))
    failing = process_document.delay("doc-bad", {"format": "no-such-format"})
    for result in results:
        result.get(timeout=60)
    failing.get(timeout=60, propagate=False)
    assert failing.failed(), failing.state
    assert len(results) + 1 == TASKS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUTPUT)
    out = parser.parse_args().out
    warnings.filterwarnings("ignore", category=DirtyLocalWarning)
    with scratch_with_private_redis("ccw-flower-") as (scratch, port, processes):
        try:
            project = render(scratch / "project", {}).path
            env = private_redis_env(project, port)
            os.environ.update(env)  # send_tasks imports the rendered package
            sys.path.insert(0, str(project))

            def start(name: str, args: list[str], **extra: str) -> ManagedProcess:
                process = ManagedProcess(name, args, cwd=project, env=env | extra, log_dir=scratch)
                processes.append(process.start())
                return process

            worker = [CELERY, "-A", APP, "worker", "--loglevel=INFO"]
            workers = [
                start("worker", [*worker, "-n", "worker@%h", "-Q", "default", "--concurrency=2"]),
                start("urgent", [*worker, "-n", "urgent@%h", "-Q", "high_priority", "-c", "1"]),
            ]
            credentials = f"ops:{secrets.token_urlsafe(18)}"
            flower_port = free_port()
            flower_args = [sys.executable, "-m", f"{PACKAGE}.flower", f"--port={flower_port}"]
            start("flower", [*flower_args, "--address=127.0.0.1"], FLOWER_BASIC_AUTH=credentials)
            base = f"http://127.0.0.1:{flower_port}"

            def workers_online() -> bool:
                try:
                    listed = flower_api(base, "/api/workers?refresh=1", credentials)
                except OSError:
                    return False
                return len(listed) == 2

            wait_until(workers_online, 90, interval=1.0)
            # Flower switches task events on in the workers after its first look at them; a task
            # sent before that would be missing from its counts.
            enabled = "Events of group {task} enabled by remote"
            wait_until(lambda: all(enabled in process.log() for process in workers), 60)
            send_tasks()
            # Flower counts from the workers' events, which arrive a moment after the results.
            wait_until(lambda: len(flower_api(base, "/api/tasks", credentials)) >= TASKS, 30)
            with headless_chromium(scratch / "profile", scratch / "chromedriver.log") as driver:
                send_basic_auth(driver, credentials)
                driver.get(f"{base}/workers")
                page_text = driver.find_element("tag name", "body").text
                wait_until(lambda: driver.page_source.count("Online") >= 2, 30)
                assert "worker@" in driver.page_source, page_text
                out.parent.mkdir(parents=True, exist_ok=True)
                assert driver.save_screenshot(str(out))
        except Exception:
            for process in processes:
                print(f"--- {process.name} log (tail)\n{process.log()[-2000:]}", file=sys.stderr)
            raise
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
