"""Draw docs/images/architecture.svg: the processes of a generated project and how they connect.

Plain SVG written from the boxes and arrows below (the standard library only), so the picture can
be changed here and regenerated: `.venv/bin/python scripts/architecture_diagram.py`.
tests/test_docs.py checks that the checked-in file is what this script writes.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "images" / "architecture.svg"

WIDTH, HEIGHT = 1180, 770
BODY_TOP = 30  # the body is drawn 30 px below the title
SANS = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
MONO = "ui-monospace, 'SFMono-Regular', Menlo, Consolas, 'Liberation Mono', monospace"
LINE = 17  # the distance between two lines of a box
# Fill and border of each kind of box.
COLOURS = {
    "producer": ("#e8f1fb", "#2f6fb0"),
    "broker": ("#fff4e0", "#c27c0e"),
    "queue": ("#ffffff", "#c27c0e"),
    "worker": ("#e7f6ec", "#2e8b57"),
    "store": ("#f3ecfa", "#7b4bb0"),
    "monitor": ("#fdecef", "#b0304a"),
    "outside": ("#f4f4f4", "#6b6b6b"),
    "target": ("#ffffff", "#555555"),
}


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float
    title: str
    lines: tuple[str, ...] = ()  # "`...`" lines are commands, set in a monospaced font
    kind: str = "producer"

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def bottom(self) -> float:
        return self.y + self.h

    @property
    def right(self) -> float:
        return self.x + self.w


def text(
    x: float,
    y: float,
    content: str,
    *,
    size: int = 13,
    anchor: str = "start",
    weight: str = "normal",
    fill: str = "#1f1f1f",
) -> str:
    family = SANS
    if content.startswith("`") and content.endswith("`"):
        content, family, size = content[1:-1], MONO, size - 1
    return (
        f'<text x="{x:g}" y="{y:g}" font-family="{family}" font-size="{size}" '
        f'text-anchor="{anchor}" font-weight="{weight}" fill="{fill}">{escape(content)}</text>'
    )


def box(b: Box) -> str:
    fill, stroke = COLOURS[b.kind]
    parts = [
        f'<rect x="{b.x:g}" y="{b.y:g}" width="{b.w:g}" height="{b.h:g}" rx="8" '
        f'fill="{fill}" stroke="{stroke}" stroke-width="1.6"/>',
        text(b.x + 12, b.y + 22, b.title, size=15, weight="bold", fill=stroke),
    ]
    for index, line in enumerate(b.lines):
        parts.append(text(b.x + 12, b.y + 22 + LINE * (index + 1) + 2, line, size=12))
    return "\n".join(parts)


def arrow(
    points: list[tuple[float, float]],
    label: str = "",
    *,
    at: tuple[float, float] = (0, 0),
    anchor: str = "middle",
    dashed: bool = False,
    both: bool = False,
) -> str:
    """A polyline with an arrowhead at its end (and its start if `both`), and a label at `at`."""
    path = " ".join(f"{x:g},{y:g}" for x, y in points)
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    start = ' marker-start="url(#head-start)"' if both else ""
    parts = [
        f'<polyline points="{path}" fill="none" stroke="#444" stroke-width="1.6"{dash}{start} '
        f'marker-end="url(#head)"/>'
    ]
    for index, line in enumerate(label.split("\n") if label else []):
        parts.append(text(at[0], at[1] + 15 * index, line, size=12, anchor=anchor, fill="#333"))
    return "\n".join(parts)


# -- The picture ------------------------------------------------------------------------------------
BEAT = Box(
    30,
    90,
    230,
    112,
    "beat (exactly one)",
    (
        "the beat schedule: cleanup,",
        "generate_report; sends only",
        "while it holds the beat lock",
        "`celery ... beat`",
    ),
)
APP = Box(
    30,
    232,
    230,
    130,
    "your application",
    (
        "`task.delay(...)`",
        "`enqueue_many(task, ...)`",
        "`enqueue_summary(...)`",
        "`get_progress(result)`",
        "`wait_for_result(result)`",
    ),
)
BROKER = Box(340, 90, 250, 272, "broker", ("Redis or RabbitMQ",), "broker")
MAIN_QUEUE = Box(
    360, 150, 210, 78, "main queues", ("default, and every queue", "but the urgent one"), "queue"
)
URGENT_QUEUE = Box(
    360,
    250,
    210,
    78,
    "urgent queue",
    ("high_priority: health_check", "and what you route there"),
    "queue",
)
WORKERS_FRAME = (660, 72, 262, 308)  # x, y, w, h of the dashed frame around the two workers
WORKER = Box(
    676,
    104,
    230,
    118,
    "worker",
    (
        "main queues, prefork pool",
        "late ack, bounded re-runs",
        "scaled: replicas or numprocs",
        "`celery ... worker`",
    ),
    "worker",
)
URGENT = Box(
    676,
    240,
    230,
    122,
    "urgent worker",
    (
        "urgent queue only, its own",
        "pool: never behind a backlog",
        "`-Q high_priority`",
        "`-n urgent@%h`",
    ),
    "worker",
)
RESULTS = Box(
    30,
    440,
    892,
    62,
    "result backend",
    (
        "Redis, rpc:// (back over RabbitMQ to the sender) or none (fire and forget): results, PROGRESS "
        "reports, chord counters",
    ),
    "store",
)
FLOWER = Box(
    960,
    104,
    200,
    118,
    "Flower",
    (
        "tasks and workers, live;",
        "credentials required,",
        "/healthcheck, /metrics open",
        "`python -m <pkg>.flower`",
    ),
    "monitor",
)
EXPORTER = Box(
    960,
    240,
    200,
    122,
    "metrics exporter",
    (
        "queue depths, reserved",
        "messages and workers,",
        "read from the broker",
        "`python -m <pkg> metrics`",
        "`  --port 9808`",
    ),
    "monitor",
)
SCRAPERS = Box(960, 440, 200, 62, "Prometheus, you", ("scrape /metrics, browse",), "outside")
TARGETS = (
    (
        "Docker (compose)",
        ("services: broker, worker,", "worker-urgent, beat, flower", "healthchecks per service"),
    ),
    (
        "Kubernetes",
        (
            "worker Deployment + HPA,",
            "worker-urgent, beat (1 replica),",
            "flower + Service; probes",
        ),
    ),
    (
        "systemd",
        ("<name>-worker@<queues>", "(one unit per queue set),", "<name>-beat, <name>-flower"),
    ),
    (
        "supervisord",
        ("programs <name>-worker,", "<name>-urgent, <name>-beat,", "<name>-flower (one group)"),
    ),
)
TARGETS_TOP = 590


def drawing() -> str:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="title desc">',
        '<title id="title">The processes of a generated project</title>',
        '<desc id="desc">Your application and one beat send tasks to the broker (Redis or '
        "RabbitMQ); a worker consumes the main queues and an urgent worker the urgent queue; "
        "results and progress go to the result backend; Flower and the metrics exporter read the "
        "broker; each deployment target starts these processes.</desc>",
        "<defs>",
        '<marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#444"/>'
        "</marker>",
        '<marker id="head-start" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#444"/></marker>',
        "</defs>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        text(
            30,
            40,
            "A generated project: its processes and what connects them",
            size=20,
            weight="bold",
        ),
        text(
            30,
            62,
            "<pkg> is the package (utils.workers by default); every process reads the "
            "same CELERY_* environment.",
            size=13,
            fill="#555",
        ),
        f'<g transform="translate(0,{BODY_TOP})">',
    ]
    x, y, w, h = WORKERS_FRAME
    parts.append(
        f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="10" fill="none" stroke="#2e8b57" '
        'stroke-width="1.2" stroke-dasharray="5 4"/>'
    )
    parts.append(text(x + 16, y + 22, "workers", size=13, weight="bold", fill="#2e8b57"))
    frame = (950, 72, 220, 308)
    parts.append(
        f'<rect x="{frame[0]}" y="{frame[1]}" width="{frame[2]}" height="{frame[3]}" rx="10" '
        'fill="none" stroke="#b0304a" stroke-width="1.2" stroke-dasharray="5 4"/>'
    )
    parts.append(
        text(frame[0] + 10, frame[1] + 22, "monitoring", size=13, weight="bold", fill="#b0304a")
    )
    for b in (
        BEAT,
        APP,
        BROKER,
        MAIN_QUEUE,
        URGENT_QUEUE,
        WORKER,
        URGENT,
        RESULTS,
        FLOWER,
        EXPORTER,
        SCRAPERS,
    ):
        parts.append(box(b))

    parts += [
        # Producers into the broker.
        arrow([(BEAT.right, 146), (BROKER.x, 146)], "periodic", at=(300, 139)),
        arrow([(APP.right, 290), (BROKER.x, 290)], "tasks", at=(300, 283)),
        # The broker's queues to their workers.
        arrow([(MAIN_QUEUE.right, 189), (WORKER.x, 189)]),
        arrow([(URGENT_QUEUE.right, 289), (URGENT.x, 289)]),
        text(623, 182, "consume", size=12, anchor="middle", fill="#333"),
        # Results: from the workers down, and up to the application.
        arrow(
            [(791, WORKERS_FRAME[1] + WORKERS_FRAME[3]), (791, RESULTS.y)],
            "results, progress",
            at=(801, 418),
            anchor="start",
        ),
        arrow([(145, RESULTS.y), (145, APP.bottom)], "read", at=(155, 410), anchor="start"),
        arrow(
            [(URGENT_QUEUE.cx, BROKER.bottom), (URGENT_QUEUE.cx, RESULTS.y)],
            "rpc://: replies over the broker",
            at=(475, 418),
            anchor="start",
            dashed=True,
        ),
        # Monitoring reads the broker, over the workers.
        arrow(
            [(BROKER.cx, BROKER.y), (BROKER.cx, 56), (1060, 56), (1060, 72)],
            "events, queue depths, ping replies (all through the broker)",
            at=(780, 50),
        ),
        arrow([(1060, 380), (1060, SCRAPERS.y)], both=True),
    ]

    # The deployment targets.
    band_height = HEIGHT - BODY_TOP - (TARGETS_TOP - 40) - 10
    parts.append(
        f'<rect x="20" y="{TARGETS_TOP - 40}" width="{WIDTH - 40}" height="{band_height}" '
        'rx="10" fill="#fafafa" stroke="#999" stroke-width="1"/>'
    )
    parts.append(
        text(
            36,
            TARGETS_TOP - 14,
            "Deployment targets (any of them): each starts the "
            "processes above from the same package",
            size=15,
            weight="bold",
        )
    )
    width = (WIDTH - 60 - 3 * 20) / 4
    for index, (title, lines) in enumerate(TARGETS):
        parts.append(
            box(Box(30 + index * (width + 20), TARGETS_TOP, width, 100, title, lines, "target"))
        )
    parts.append(
        text(
            36,
            HEIGHT - BODY_TOP - 24,
            "The broker and the result store are yours to run; "
            "compose starts both as services too, for one machine.",
            size=12,
            fill="#555",
        )
    )
    parts.append("</g>\n</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUTPUT)
    out = parser.parse_args().out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(drawing())
    print(out)


if __name__ == "__main__":
    main()
