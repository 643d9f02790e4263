"""The queues' metrics for Prometheus and KEDA: `python -m {{ package_path }} metrics`.

Celery's events and Flower's /metrics say what the workers did; nothing there says what waits for
them. This exporter reads the broker (queues.py) every CELERY_METRICS_INTERVAL seconds in one
thread, so any number of scrapers cost the broker one reading per interval, and serves

    GET /metrics               Prometheus text: per queue ready and reserved messages, the age
                               of the oldest of each, the workers consuming it; whether a beat
                               holds the beat lock; whether the broker answered
    GET /backlog?queues=a,b    JSON {"backlog": N, "queues": {...}}: ready + reserved messages
                               of the named queues, for KEDA's metrics-api scaler (404 for a
                               queue routing.py does not declare, 503 while the broker is away)
    GET /healthz               200 while the last reading reached the broker, 503 otherwise

on CELERY_METRICS_ADDRESS:CELERY_METRICS_PORT. `metrics --once` prints one reading in Prometheus'
text format and exits (node_exporter's textfile collector, a cron job, a quick look).
https://prometheus.io/docs/instrumenting/writing_exporters/
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from celery import Celery
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .beat_lock import lock_held
from .queues import KNOWS_AGES, QueueDepth, queue_depths
from .routing import QUEUE_NAMES

logger = logging.getLogger(__name__)
INSPECT_TIMEOUT = 1.0  # s the workers get to say which queues they consume


@dataclass(frozen=True)
class Reading:
    """One look at the broker; `error` says why the broker did not answer."""

    at: float
    seconds: float = 0.0
    depths: list[QueueDepth] = field(default_factory=list)
    workers: dict[str, list[str]] = field(default_factory=dict)  # worker: its queues
    beat: bool = False
    error: str | None = None


def read(app: Celery[Any]) -> Reading:
    started = time.time()
    try:
        depths = queue_depths(app)
        beat = lock_held(app)
        answers = app.control.inspect(timeout=INSPECT_TIMEOUT).active_queues() or {}
    except Exception as error:  # the broker is away or refused us: say so, keep serving
        return Reading(at=started, seconds=time.time() - started, error=str(error) or repr(error))
    workers = {name: sorted(q["name"] for q in queues) for name, queues in answers.items()}
    return Reading(started, time.time() - started, depths, workers, beat)


class Exporter(Collector):
    """Holds the latest reading; a thread renews it every `interval` seconds."""

    def __init__(self, app: Celery[Any], interval: float) -> None:
        self.app = app
        self.interval = interval
        self.reading = Reading(at=0.0, error="no reading yet")
        self.stopped = threading.Event()

    def renew(self) -> None:
        reading = read(self.app)
        if reading.error and (not self.reading.error or not self.reading.at):
            logger.warning("cannot read the broker: %s", reading.error)
        elif self.reading.error and not reading.error and self.reading.at:
            logger.warning("reading the broker again")
        self.reading = reading

    def run(self) -> None:
        while not self.stopped.wait(max(0.0, self.reading.at + self.interval - time.time())):
            self.renew()

    def collect(self) -> Iterator[Metric]:
        reading = self.reading
        up = GaugeMetricFamily("celery_broker_up", "1 if the last reading reached the broker.")
        up.add_metric([], 0 if reading.error else 1)
        yield up
        when = GaugeMetricFamily(
            "celery_exporter_reading_timestamp_seconds", "When the last reading was taken."
        )
        when.add_metric([], reading.at)
        yield when
        took = GaugeMetricFamily(
            "celery_exporter_reading_duration_seconds", "How long the last reading took."
        )
        took.add_metric([], reading.seconds)
        yield took
        if reading.error:
            return  # no figures rather than stale ones
        families = {
            name: GaugeMetricFamily(name, text, labels=["queue"])
            for name, text in (
                ("celery_queue_ready_messages", "Messages waiting for a worker."),
                ("celery_queue_reserved_messages", "Messages taken by a worker, not acked yet."),
                ("celery_queue_oldest_ready_age_seconds", "Age of the oldest waiting message."),
                ("celery_queue_oldest_reserved_age_seconds", "Longest a message has been held."),
                ("celery_queue_workers", "Workers that answered and consume the queue."),
            )
        }
        for depth in reading.depths:
            label = [depth.queue]
            families["celery_queue_ready_messages"].add_metric(label, depth.ready)
            if depth.reserved is not None:
                families["celery_queue_reserved_messages"].add_metric(label, depth.reserved)
            if KNOWS_AGES:  # ages of 0: nothing waits, or nothing is held
                held = depth.oldest_reserved_seconds or 0.0
                families["celery_queue_oldest_reserved_age_seconds"].add_metric(label, held)
                waited = depth.oldest_ready_seconds or 0.0
                families["celery_queue_oldest_ready_age_seconds"].add_metric(label, waited)
            consuming = sum(depth.queue in queues for queues in reading.workers.values())
            families["celery_queue_workers"].add_metric(label, consuming)
        yield from (family for family in families.values() if family.samples)
        workers = GaugeMetricFamily("celery_workers", "Workers that answered.")
        workers.add_metric([], len(reading.workers))
        yield workers
        beat = GaugeMetricFamily("celery_beat_lock_held", "1 if a beat holds the beat lock.")
        beat.add_metric([], 1 if reading.beat else 0)
        yield beat

    def backlog(self, names: list[str]) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON document of GET /backlog?queues=<names>."""
        unknown = [name for name in names if name not in QUEUE_NAMES]
        if not names or unknown:
            return 404, {
                "error": f"unknown queue {', '.join(unknown)!r}" if unknown else "no queue named",
                "queues": list(QUEUE_NAMES),
            }
        reading = self.reading
        if reading.error:
            return 503, {"error": f"cannot read the broker: {reading.error}"}
        depths = {depth.queue: depth for depth in reading.depths if depth.queue in names}
        return 200, {
            "backlog": sum(depth.backlog for depth in depths.values()),
            "queues": {name: depth.as_dict() for name, depth in depths.items()},
            "read_at": reading.at,
        }


def text(exporter: Exporter) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    return generate_latest(registry)


class _Handler(BaseHTTPRequestHandler):
    exporter: Exporter

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/metrics":
            self._send(200, text(self.exporter), CONTENT_TYPE_LATEST)
        elif url.path == "/backlog":
            wanted = ",".join(parse_qs(url.query).get("queues", []))
            names = [name.strip() for name in wanted.split(",") if name.strip()]
            status, document = self.exporter.backlog(names)
            self._send(status, json.dumps(document).encode(), "application/json")
        elif url.path == "/healthz":
            error = self.exporter.reading.error
            self._send(503 if error else 200, (error or "ok").encode() + b"\n", "text/plain")
        else:
            self._send(404, b"/metrics, /backlog?queues=a,b or /healthz\n", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
        pass


def serve(app: Celery[Any], address: str, port: int, interval: float) -> None:
    """Serve until SIGTERM or SIGINT. Raises OSError when the port cannot be bound."""
    exporter = Exporter(app, interval)
    handler = type("Handler", (_Handler,), {"exporter": exporter})
    server = ThreadingHTTPServer((address, port), handler)
    server.daemon_threads = True
    exporter.renew()
    reader = threading.Thread(target=exporter.run, name="broker-reader", daemon=True)
    reader.start()

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    host, bound = server.server_address[:2]
    logger.warning("metrics on http://%s:%s/metrics, read every %g s", host, bound, interval)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        exporter.stopped.set()
        server.server_close()
