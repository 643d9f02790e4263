"""One table of every benchmark's figures against its goal, a chart, and a JSON of all results.

    .venv/bin/python bench/report.py RESULTS_DIR [--benches NAME,...] [--out DIR] [--quick]

bench/run runs the benchmarks and calls this with the directory it filled, which holds for each
benchmark NAME: NAME.json (the script's stdout with --json), NAME.err (its stderr) and NAME.status
(JSON: {"rc", "seconds", "load_average_before", "command"}, or {"missing": "bench/NAME.py"} when
the script does not exist). It prints the table (metric, ours, baseline, ratio, goal, met), the
machine, and writes OUT/bench-results.json and, when matplotlib is importable, OUT/bench.png.

Exit status: 0 when every benchmark ran (goals missed or not: the table says), 1 when one failed
(named, with its stderr tail), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

BENCHES = ("throughput", "latency", "enqueue", "coldstart", "copytime")
TABLE_WIDTH = 100
STDERR_TAIL_LINES = 25


# -- outcomes -------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What one benchmark gave: state "ok" (with data), "missing" or "failed" (with error)."""

    name: str
    state: str
    data: Any = None
    error: str = ""
    stderr_tail: str = ""
    status: dict[str, Any] = field(default_factory=dict)


def last_json(text: str) -> Any:
    """The last JSON document of a script's stdout: copier's post-copy task may print before it."""
    stripped = text.strip()
    if not stripped:
        raise ValueError("empty output")
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        pass
    lines = stripped.splitlines()
    for start in range(len(lines) - 1, -1, -1):
        if lines[start].startswith(("{", "[")):
            try:
                return json.loads("\n".join(lines[start:]))
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON document in its output")


def tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def load_outcome(results: Path, name: str) -> Outcome:
    status_path = results / f"{name}.status"
    if not status_path.is_file():
        script = Path(__file__).resolve().parent / f"{name}.py"
        if not script.is_file():
            return Outcome(name, "missing", error=f"bench/{name}.py not found")
        return Outcome(name, "failed", error=f"no result in {results} (was it run?)")
    try:
        status = json.loads(status_path.read_text())
    except json.JSONDecodeError as error:
        return Outcome(name, "failed", error=f"{status_path.name}: {error}")
    if "missing" in status:
        return Outcome(name, "missing", error=f"{status['missing']} not found", status=status)
    stderr_tail = tail(results / f"{name}.err")
    rc = status.get("rc")
    if rc != 0:
        return Outcome(
            name, "failed", error=f"exit status {rc}", stderr_tail=stderr_tail, status=status
        )
    out_path = results / f"{name}.json"
    try:
        data = last_json(out_path.read_text() if out_path.is_file() else "")
    except ValueError as error:
        return Outcome(
            name, "failed", error=f"stdout: {error}", stderr_tail=stderr_tail, status=status
        )
    return Outcome(name, "ok", data=data, status=status)


# -- metrics --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Goal:
    """`ratio` or the measured value (`ours`) compared with a threshold."""

    on: str  # "ratio" or "ours"
    op: str  # ">=" or "<="
    threshold: float
    unit: str = ""

    @property
    def text(self) -> str:
        shown = f"{self.threshold:g}" if self.threshold >= 10 else f"{self.threshold:.1f}"
        if self.on == "ratio":
            return f"ratio {self.op} {shown}"
        return f"{self.op} {shown} {self.unit}".rstrip()

    def met(self, value: float) -> bool:
        return value >= self.threshold if self.op == ">=" else value <= self.threshold

    def score(self, value: float) -> float:
        """Above 1 meets the goal, whatever its direction (for the chart)."""
        if self.op == ">=":
            return value / self.threshold
        return self.threshold / value if value else float("inf")


Values = tuple[float | None, float | None]  # ours, baseline


@dataclass(frozen=True)
class Metric:
    bench: str
    label: str  # the table's metric column
    short: str  # the chart's label
    extract: Callable[[Any], Values]
    fmt: str  # format of ours and baseline
    goal: Goal | None = None
    goal_text: str = "-"


@dataclass
class Row:
    metric: Metric
    state: str
    ours: float | None = None
    baseline: float | None = None
    ratio: float | None = None
    met: bool | None = None
    error: str = ""

    @property
    def goal_text(self) -> str:
        return self.metric.goal.text if self.metric.goal else self.metric.goal_text

    def as_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric.label,
            "bench": self.metric.bench,
            "state": self.state,
            "ours": self.ours,
            "baseline": self.baseline,
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "goal": self.goal_text,
            "met": self.met,
            **({"error": self.error} if self.error else {}),
        }


def _layout(data: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for row in data:
        if row.get("layout") == name:
            return row
    raise KeyError(f"layout {name!r}")


def _stream_peaks(data: dict[str, Any]) -> Values:
    peaks = {int(count): float(peak) for count, peak in data["stream_peak_bytes"].items()}
    return peaks[max(peaks)] / 1e6, peaks[min(peaks)] / 1e6


METRICS = (
    Metric(
        "throughput",
        "throughput tasks/s, vs bare Celery",
        "throughput ratio",
        lambda d: (d["workers"]["rendered"]["median"], d["workers"]["baseline"]["median"]),
        "{:,.0f}",
        Goal("ratio", ">=", 1.0),
    ),
    Metric(
        "throughput",
        "worker CPU ms/task, vs bare Celery",
        "worker CPU per task",
        lambda d: (
            d["workers"]["rendered"]["cpu_ms_per_task_median"],
            d["workers"]["baseline"]["cpu_ms_per_task_median"],
        ),
        "{:.2f}",
        goal_text="- (below 1: less)",
    ),
    Metric(
        "latency",
        "urgent p99 ms, vs one-worker layout",
        "urgent p99",
        lambda d: (
            _layout(d, "generated")["start_p99_ms"],
            _layout(d, "one worker")["start_p99_ms"],
        ),
        "{:,.1f}",
        Goal("ours", "<=", 100.0, "ms"),
    ),
    Metric(
        "latency",
        "urgent p50 ms, vs one-worker layout",
        "urgent p50",
        lambda d: (
            _layout(d, "generated")["start_p50_ms"],
            _layout(d, "one worker")["start_p50_ms"],
        ),
        "{:,.1f}",
    ),
    Metric(
        "enqueue",
        "enqueue_many /s, vs delay() loop",
        "enqueue_many / loop",
        lambda d: (d["enqueue_many_per_s"], d["delay_loop_per_s"]),
        "{:,.0f}",
        Goal("ratio", ">=", 10.0),
    ),
    Metric(
        "enqueue",
        "enqueue_many /s, vs raw pipeline",
        "enqueue_many / raw",
        lambda d: (d["enqueue_many_per_s"], d["raw_pipeline_per_s"]),
        "{:,.0f}",
        goal_text="- (limit)",
    ),
    Metric(
        "enqueue",
        "stream peak MB, 100% vs 10%",
        "stream memory flat",
        _stream_peaks,
        "{:,.1f}",
        Goal("ratio", "<=", 1.2),
    ),
    Metric(
        "coldstart",
        "cold start s, vs bare Celery",
        "cold start ratio",
        lambda d: (d["median_s"]["rendered"], d["median_s"]["baseline"]),
        "{:.2f}",
        Goal("ratio", "<=", 1.1),
    ),
    Metric(
        "coldstart",
        "worker PSS MB, vs bare Celery",
        "worker memory (PSS)",
        lambda d: (d["memory_mb"]["rendered"]["pss"], d["memory_mb"]["baseline"]["pss"]),
        "{:,.1f}",
        Goal("ratio", "<=", 1.1),
    ),
    Metric(
        "copytime",
        "copier copy s, vs a 1-file template",
        "copier copy",
        lambda d: (d["median_s"], d.get("floor_median_s")),
        "{:.2f}",
        Goal("ours", "<=", 1.0, "s"),
    ),
)


def make_row(metric: Metric, outcome: Outcome) -> Row:
    if outcome.state != "ok":
        return Row(metric, outcome.state, error=outcome.error)
    try:
        ours, baseline = metric.extract(outcome.data)
        ours = None if ours is None else float(ours)
        baseline = None if baseline is None else float(baseline)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        return Row(metric, "failed", error=f"unexpected JSON: {type(error).__name__}: {error}")
    ratio = ours / baseline if ours is not None and baseline else None
    met = None
    if metric.goal is not None:
        value = ratio if metric.goal.on == "ratio" else ours
        met = None if value is None else metric.goal.met(value)
    return Row(metric, "ok", ours, baseline, ratio, met)


# -- machine --------------------------------------------------------------------------------------
def _installed(name: str) -> str | None:
    try:
        return f"{name} {version(name)}"
    except PackageNotFoundError:
        return None


def machine(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """What the scripts reported about the machine, else what this process sees."""
    reported: dict[str, Any] = {}
    for outcome in outcomes:
        if outcome.state == "ok" and isinstance(outcome.data, dict):
            for key in ("cpus", "python", "celery", "kombu", "redis_server", "copier"):
                if key in outcome.data:
                    reported.setdefault(key, outcome.data[key])
    info: dict[str, Any] = {
        "cores": reported.get("cpus", os.cpu_count() or 1),
        "platform": platform.platform(),
        "python": reported.get("python", platform.python_version()),
    }
    for key in ("celery", "kombu", "copier"):
        info[key] = reported.get(key) or _installed(key)
    info["redis_server"] = reported.get("redis_server")
    info["load_average_before"] = {
        o.name: o.status["load_average_before"]
        for o in outcomes
        if "load_average_before" in o.status
    }
    info["load_average_at_report"] = round(os.getloadavg()[0], 2)
    return info


# -- output ---------------------------------------------------------------------------------------
def _cell(fmt: str, value: float | None) -> str:
    return "-" if value is None else fmt.format(value)


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10:
        return f"{value:.1f}x"
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.3f}x"


def print_table(rows: Sequence[Row], console: Any, quick: bool) -> None:
    from rich.table import Table

    title = "Benchmarks against their goals" + (" (--quick: smoke sizes)" if quick else "")
    table = Table(title=title)
    table.add_column("metric", no_wrap=True)
    for column in ("ours", "baseline", "ratio"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("goal", no_wrap=True)
    table.add_column("met", no_wrap=True)
    for row in rows:
        fmt = row.metric.fmt
        if row.state == "ok":
            met = "-" if row.met is None else "[green]yes[/]" if row.met else "[red]no[/]"
            cells = (_cell(fmt, row.ours), _cell(fmt, row.baseline), _ratio(row.ratio), met)
        else:
            style = "yellow" if row.state == "missing" else "bold red"
            cells = (f"[{style}]{row.state}[/]", "-", "-", "-")
        table.add_row(row.metric.label, *cells[:3], row.goal_text, cells[3])
    console.print(table)


def describe_machine(info: dict[str, Any]) -> list[str]:
    versions = [f"Python {info['python']}"]
    versions += [
        info[key] for key in ("celery", "kombu", "redis_server", "copier") if info.get(key)
    ]
    lines = [
        f"machine: {info['cores']} cores, {info['platform']}",
        "versions: " + ", ".join(versions),
    ]
    loads = ", ".join(f"{name} {load}" for name, load in info["load_average_before"].items())
    lines.append(f"load average before: {loads or '-'}; after: {info['load_average_at_report']}")
    return lines


def make_chart(rows: Sequence[Row], outcomes: dict[str, Outcome], path: Path, quick: bool) -> None:
    """Three panels: throughput, urgent latency (log), every goal's margin (log). Raises on failure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    figure, (left, middle, right) = plt.subplots(
        1, 3, figsize=(15, 4.8), gridspec_kw={"width_ratios": [1, 1.2, 1.6]}
    )
    colors = {"ours": "#2b6cb0", "baseline": "#a0aec0", "met": "#38a169", "missed": "#e53e3e"}

    def no_data(axis: Any, title: str, name: str) -> None:
        outcome = outcomes.get(name)
        reason = outcome.state if outcome else "not run"
        axis.set_title(title)
        axis.text(
            0.5, 0.5, f"no data ({reason})", ha="center", va="center", transform=axis.transAxes
        )
        axis.set_xticks([])
        axis.set_yticks([])

    throughput = outcomes.get("throughput")
    if throughput and throughput.state == "ok":
        workers = throughput.data["workers"]
        labels = ("rendered", "bare Celery")
        medians = [workers["rendered"]["median"], workers["baseline"]["median"]]
        lows = [
            m - workers[k]["min"] for m, k in zip(medians, ("rendered", "baseline"), strict=True)
        ]
        highs = [
            workers[k]["max"] - m for m, k in zip(medians, ("rendered", "baseline"), strict=True)
        ]
        bars = left.bar(
            labels,
            medians,
            yerr=[lows, highs],
            capsize=6,
            color=[colors["ours"], colors["baseline"]],
        )
        left.bar_label(
            bars, labels=[f"{m:,.0f}" for m in medians], label_type="center", color="white"
        )
        left.set_ylabel("tasks/s (median, min-max)")
        left.set_title(f"Throughput, ratio {throughput.data['ratio']:.2f} (goal >= 1.0)")
    else:
        no_data(left, "Throughput", "throughput")

    latency = outcomes.get("latency")
    if latency and latency.state == "ok":
        layouts = [_layout(latency.data, "generated"), _layout(latency.data, "one worker")]
        positions = range(len(layouts))
        width = 0.38
        for offset, key, label, color in (
            (-width / 2, "start_p50_ms", "p50", colors["baseline"]),
            (width / 2, "start_p99_ms", "p99", colors["ours"]),
        ):
            values = [layout[key] for layout in layouts]
            bars = middle.bar(
                [p + offset for p in positions], values, width, label=label, color=color
            )
            middle.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8)
        middle.set_xticks(list(positions), ["generated layout", "one worker"])
        middle.set_yscale("log")
        middle.axhline(100, color=colors["missed"], linestyle="--", linewidth=1, label="goal p99")
        middle.set_ylabel("send to start, ms (log)")
        middle.set_title("Urgent latency under long tasks")
        middle.legend(fontsize=8)
    else:
        no_data(middle, "Urgent latency", "latency")

    scored: list[tuple[Row, float, float]] = []
    for row in rows:
        goal = row.metric.goal
        if goal is None or row.state != "ok":
            continue
        value = row.ratio if goal.on == "ratio" else row.ours
        if value is not None and value > 0:
            scored.append((row, value, goal.score(value)))
    if scored:
        scored.reverse()  # barh draws bottom-up: keep the table's order from the top
        scores = [score for _, _, score in scored]
        # Bars from 1 (the goal) to the margin: right of the line met, left of it missed.
        right.barh(
            [row.metric.short for row, _, _ in scored],
            [score - 1 for score in scores],
            left=1,
            height=0.6,
            color=[colors["met"] if score >= 1 else colors["missed"] for score in scores],
        )
        right.set_xscale("log")
        right.axvline(1.0, color="black", linewidth=1)
        for index, (row, value, score) in enumerate(scored):
            goal = row.metric.goal
            assert goal is not None
            shown = _ratio(value) if goal.on == "ratio" else f"{value:g} {goal.unit}"
            label = f" {shown} ({row.goal_text})"
            right.text(max(score, 1.0), index, label, va="center", fontsize=8)
        low, high = min(*scores, 0.5), max(*scores, 2.0)
        right.set_xlim(low / 1.5, high * 8)
        right.set_ylim(-0.6, max(len(scored), 5) - 0.4)  # slim bars however few goals ran
        right.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        right.set_xlabel("margin to the goal (log): right of 1 met, left of 1 missed")
        right.set_title("Goals")
    else:
        no_data(right, "Goals", "")

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    suffix = " (--quick: smoke sizes, not figures)" if quick else ""
    figure.suptitle(f"copier-celery-workers benchmarks, {stamp}{suffix}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_results(
    path: Path,
    outcomes: Sequence[Outcome],
    rows: Sequence[Row],
    info: dict[str, Any],
    quick: bool,
) -> None:
    document = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": info,
        "rows": [row.as_json() for row in rows],
        "benches": {
            o.name: {
                "state": o.state,
                **{k: v for k, v in o.status.items() if k != "missing"},
                **({"error": o.error} if o.error else {}),
                **({"stderr_tail": o.stderr_tail} if o.state == "failed" else {}),
                "result": o.data,
            }
            for o in outcomes
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


# -- main -----------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("results", type=Path, help="the directory bench/run filled")
    parser.add_argument(
        "--benches",
        default=",".join(BENCHES),
        help=f"comma-separated, in order (default {','.join(BENCHES)})",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("docs"), help="where bench.png and bench-results.json go"
    )
    parser.add_argument("--quick", action="store_true", help="label the output as a smoke run")
    args = parser.parse_args(argv)
    args.names = [name.strip() for name in args.benches.split(",") if name.strip()]
    unknown = [name for name in args.names if name not in BENCHES]
    if unknown or not args.names:
        parser.error(f"--benches: unknown {unknown or 'empty'}; known: {', '.join(BENCHES)}")
    if not args.results.is_dir():
        parser.error(f"{args.results}: not a directory")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from rich.console import Console

    args = parse_args(argv)
    width = min(shutil.get_terminal_size((TABLE_WIDTH, 24)).columns, TABLE_WIDTH)
    console = Console(width=width)
    errors = Console(width=width, stderr=True)

    outcomes = {name: load_outcome(args.results, name) for name in args.names}
    rows = [make_row(m, outcomes[m.bench]) for m in METRICS if m.bench in outcomes]
    # A bench whose JSON lacks what a row needs failed too, even if the script exited 0.
    for row in rows:
        outcome = outcomes[row.metric.bench]
        if row.state == "failed" and outcome.state == "ok":
            outcome.state, outcome.error = "failed", row.error
    info = machine(list(outcomes.values()))

    console.print()
    print_table(rows, console, args.quick)
    for line in describe_machine(info):
        console.print(line, highlight=False, soft_wrap=True)
    ran = [f"{o.name} {o.status['seconds']} s" for o in outcomes.values() if "seconds" in o.status]
    if ran:
        console.print("time per bench: " + ", ".join(ran), highlight=False, soft_wrap=True)
    skipped = [name for name in BENCHES if name not in outcomes]
    if skipped:
        console.print(
            f"not selected (--only): {', '.join(skipped)}", highlight=False, soft_wrap=True
        )

    chart = args.out / "bench.png"
    try:
        make_chart(rows, outcomes, chart, args.quick)
        console.print(f"chart: {chart}", highlight=False, soft_wrap=True)
    except ImportError as error:
        console.print(
            f"no chart: matplotlib is not importable ({error}); "
            "install it with .venv/bin/python -m pip install --group bench",
            highlight=False,
            soft_wrap=True,
        )
    except Exception as error:  # the table matters more than the chart
        console.print(f"no chart: {type(error).__name__}: {error}", highlight=False, soft_wrap=True)
    results_path = args.out / "bench-results.json"
    write_results(results_path, list(outcomes.values()), rows, info, args.quick)
    console.print(f"results: {results_path}", highlight=False, soft_wrap=True)

    for outcome in outcomes.values():
        if outcome.state == "missing":
            console.print(
                f"[yellow]{outcome.name}: missing[/] ({outcome.error})",
                highlight=False,
                soft_wrap=True,
            )
    failed = [o for o in outcomes.values() if o.state == "failed"]
    for outcome in failed:
        errors.print(
            f"[bold red]{outcome.name} failed[/]: {outcome.error}", highlight=False, soft_wrap=True
        )
        if outcome.stderr_tail:
            errors.print(f"--- last lines of its stderr ---\n{outcome.stderr_tail}", markup=False)
    if failed:
        errors.print(f"{len(failed)} bench(es) failed: {', '.join(o.name for o in failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
