"""The table the harness prints, the machine it ran on, and the JSON it writes."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Iterable
from importlib import metadata
from typing import Any

__all__ = ["machine", "table"]

ENGINE = "emailevents"
HAND = "hand-written"
BATCHED = "emailevents, batched"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    memory = ""
    try:
        with open("/proc/meminfo", encoding="ascii") as info:  # noqa: PTH123 - Linux only
            total_kb = int(info.readline().split()[1])
        memory = f"{total_kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:  # noqa: PTH123 - Linux only
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in (
        "emailevents",
        "celery",
        "kombu",
        "sqlalchemy",
        "psycopg",
        "redis",
        "postmarker",
        "pydantic",
        "requests",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    redis_server = None
    binary = shutil.which("redis-server")
    if binary:
        done = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=False, timeout=10
        )
        redis_server = done.stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "redis_server": redis_server,
    }


def _num(value: float) -> str:
    if value >= 100:  # noqa: PLR2004
        return f"{value:,.0f}"
    if value >= 10:  # noqa: PLR2004
        return f"{value:.1f}"
    return f"{value:.2f}"


def _fig(figure: dict[str, Any] | None) -> str:
    if not figure:
        return ""
    if figure["n"] == 1 or figure["min"] == figure["max"]:
        return f"{_num(figure['median'])} {figure['unit']}"
    return (
        f"{_num(figure['median'])} {figure['unit']} [{_num(figure['min'])}-{_num(figure['max'])}]"
    )


def _ratio(ratio: dict[str, Any] | None) -> tuple[str, str, str]:
    if not ratio:
        return "", "", ""
    text = f"{ratio['value']:.2f}"
    if ratio["min"] != ratio["max"]:
        text += f" [{ratio['min']:.2f}-{ratio['max']:.2f}]"
    met = ratio.get("met")
    verdict = "" if met is None else ("met" if met else "NOT MET")
    return text, ratio["target"], verdict


Row = tuple[str, str, str, str, str, str, str]


def _rows(profile: str, sections: dict[str, Any]) -> Iterable[Row]:  # noqa: C901
    name = profile
    if "throughput" in sections:
        s = sections["throughput"]
        yield (
            name,
            f"1 per-email throughput ({s['worker']})",
            _fig(s[ENGINE]),
            _fig(s[HAND]),
            *_ratio(s["ratio"]),
        )
        cpu = s["worker_cpu_per_email"]
        yield (name, "1 worker CPU per email", _fig(cpu[ENGINE]), _fig(cpu[HAND]), "", "", "")
    if "fanout" in sections:
        s = sections["fanout"]
        label = f"2 fan-out to {s['recipients']:,}"
        yield (
            name,
            f"{label}: HTTP requests",
            _fig(s["requests"][ENGINE]),
            _fig(s["requests"][HAND]),
            *_ratio(s["fewer_requests"]),
        )
        yield (
            name,
            f"{label}: task time",
            _fig(s["seconds"][ENGINE]),
            _fig(s["seconds"][HAND]),
            *_ratio(s["less_time"]),
        )
        yield (
            name,
            f"{label}: of which the local server's",
            _fig(s["server_seconds"][ENGINE]),
            _fig(s["server_seconds"][HAND]),
            "",
            "",
            "",
        )
        outside = s["outside_server_seconds"]
        yield (
            name,
            f"{label}: task time outside the server",
            _fig(outside[ENGINE]),
            _fig(outside[HAND]),
            f"{outside[HAND]['median'] / outside[ENGINE]['median']:.2f}",
            "",
            "",
        )
    if "emit" in sections:
        s = sections["emit"]
        yield (
            name,
            "3 emit() vs task.delay()",
            _fig(s["emit"]),
            _fig(s["delay"]),
            *_ratio(s["ratio"]),
        )
        t = s["session"]
        yield (
            name,
            "3 insert + emit(session=) + commit vs insert + commit",
            _fig(t["insert + emit(session=) + commit"]),
            _fig(t["insert + commit"]),
            *_ratio(t["ratio_to_insert"]),
        )
        yield (
            name,
            "3 ... vs insert + commit + delay() (hand-written)",
            "",
            _fig(t["insert + commit + delay()"]),
            *_ratio(t["ratio_to_insert_and_delay"]),
        )
    if "sql" in sections:
        s = sections["sql"]
        for run in s["runs"]:
            who = ENGINE if run["side"] == ENGINE else HAND
            label = f"4 SQL/run {run['event']} x{run['recipients']:,} ({run['commits']} commits)"
            text = (
                f"{run['statements']} ({run['delivery_log']} log)"
                if who == ENGINE
                else str(run["statements"])
            )
            yield (
                name,
                label,
                text if who == ENGINE else "",
                text if who == HAND else "",
                "",
                "",
                "",
            )
        check = s["check"]
        yield (
            name,
            "4 SQL/run grows only by batched log writes",
            "",
            "",
            "",
            check["target"],
            "met" if check["met"] else "NOT MET",
        )
        for run in s["demo_events"]:
            yield (
                name,
                f"4 SQL/run demo {run['event']} ({run['outcome']})",
                f"{run['statements']} ({run['delivery_log']} log)",
                "",
                "",
                "",
                "",
            )
    if "scaleout" in sections:
        s = sections["scaleout"]
        for procs in ("1 process", "2 processes"):
            yield (
                name,
                f"6 scale-out, {procs} ({s['worker']})",
                _fig(s[ENGINE][procs]),
                _fig(s[HAND][procs]),
                *(_ratio(s["ratio_2_processes"]) if procs != "1 process" else ("", "", "")),
            )
        yield (
            name,
            "6 speed-up 1 -> 2 processes",
            f"{s[ENGINE]['speed-up']:.2f}x",
            f"{s[HAND]['speed-up']:.2f}x",
            *_ratio(s["ratio"]),
        )
    if "io_bound" in sections:
        s = sections["io_bound"]
        latency = int(s["latency_s"] * 1000)
        for threads, pool in s["pools"].items():
            yield (
                name,
                (
                    f"7 {latency} ms latency, -P threads -c {threads} "
                    f"(ceiling {pool['ceiling']:.0f}/s)"
                ),
                _fig(pool[ENGINE]),
                _fig(pool[HAND]),
                *_ratio(pool["ratio"]),
            )
            cpu = pool["worker_cpu_per_email"]
            yield (
                name,
                f"7 worker CPU per email, {threads} threads",
                _fig(cpu[ENGINE]),
                _fig(cpu[HAND]),
                "",
                "",
                "",
            )
        if "scaling" in s:
            sc = s["scaling"]
            yield (
                name,
                f"7 speed-up {sc['from']} -> {sc['to']} threads",
                f"{sc[ENGINE]:.2f}x",
                f"{sc[HAND]:.2f}x",
                *_ratio(sc["ratio"]),
            )


def _batching_rows(profile: str, s: dict[str, Any]) -> Iterable[Row]:
    threads = s["threads"]
    for ms, at in s["latencies"].items():
        where = f"{ms} ms latency, -P threads -c {threads}"
        yield (
            profile,
            f"10 batched ({s['window_s'] * 1000:.0f} ms window) vs off, {where}",
            _fig(at[BATCHED]),
            _fig(at[ENGINE]) + " (off)",
            *_ratio(at["on_vs_off"]),
        )
        yield (
            profile,
            f"10 batched vs hand-written, {where}",
            _fig(at[BATCHED]),
            _fig(at[HAND]),
            *_ratio(at["on_vs_hand"]),
        )
    for ms, at in s.get("default_journal", {}).get("latencies", {}).items():
        yield (
            profile,
            f"10 batched vs hand-written, {ms} ms latency, SQLite default journal",
            _fig(at[BATCHED]),
            _fig(at[HAND]),
            *_ratio(at["on_vs_hand"]),
        )
    if "low_load" in s:
        low = s["low_load"]
        diff = low["difference_ms"]
        yield (
            profile,
            "10 one emit to Postmark at low load, one at a time, on - off",
            _fig(low[BATCHED]),
            _fig(low[ENGINE]) + " (off)",
            f"{diff['value']:+.1f} ms [{diff['min']:+.1f} to {diff['max']:+.1f}]",
            diff["target"],
            "met" if diff["met"] else "NOT MET",
        )


def _webhook_rows(profile: str, s: dict[str, Any]) -> Iterable[Row]:
    posts = f"{s['posts_per_batch']:,} posts, 1 in {round(1 / s['repeated_share'])} repeated"
    yield (
        profile,
        f"8 webhook records/s, wsgi_app() in-process ({posts}) vs INSERT + commit",
        _fig(s["wsgi_app() in-process"]),
        _fig(s["INSERT + commit"]),
        *_ratio(s["ratio_in_process"]),
    )
    yield (
        profile,
        f"8 webhook records/s, emailevents serve over HTTP ({s['clients']} clients)",
        _fig(s["emailevents serve over HTTP"]),
        "",
        *_ratio(s["ratio_over_http"]),
    )


def _emits_rows(profile: str, s: dict[str, Any]) -> Iterable[Row]:
    for key in ("one", "many"):
        t = s[key]
        label = f"{t['emits']:,} emit(session=)" if t["emits"] > 1 else "one emit(session=)"
        inserts = f"{t['emits']:,} inserts" if t["emits"] > 1 else "insert"
        yield (
            profile,
            f"9 {inserts} + {label} + commit vs {inserts} + commit",
            _fig(t["with emit(session=)"]),
            _fig(t["plain"]),
            *_ratio(t["ratio"]),
        )
        yield (profile, "9 ... added by the emits", _fig(t["added"]), "", "", "", "")
    for row in s["round_trips"]:
        broker = (
            f", broker {row['broker_commands']} commands on {row['broker_connections']} new conns"
            if row["broker_commands"] is not None
            else ""
        )
        yield (
            profile,
            f"9 round trips, {row['emits']:,} emit(s) in one transaction",
            (
                f"{row['emit_statements']} SQL on emits ({row['statements']} in all), "
                f"{row['published']} published{broker}"
            ),
            "",
            "",
            "",
            "",
        )


def _startup_rows(startup: dict[str, Any]) -> Iterable[Row]:
    for key, value in startup.items():
        if isinstance(value, dict) and "median" in value:
            yield (
                "-",
                f"5 {key} ({startup['events']} events)"
                if "registry" in key or "lint" in key or "EmailEvents" in key
                else f"5 {key}",
                _fig(value),
                "",
                "",
                "",
                "",
            )
    yield (
        "-",
        "5 lint findings (errors)",
        f"{len(startup['lint findings'])} ({startup['lint errors']})",
        "",
        "",
        "",
        "",
    )


def table(result: dict[str, Any]) -> str:
    """The report as a Markdown table (it reads as plain text too)."""
    rows: list[Row] = []
    for profile, sections in result["profiles"].items():
        rows.extend(_rows(profile, sections))
        if "webhooks" in sections:
            rows.extend(_webhook_rows(profile, sections["webhooks"]))
        if "emits" in sections:
            rows.extend(_emits_rows(profile, sections["emits"]))
        if "batching" in sections:
            rows.extend(_batching_rows(profile, sections["batching"]))
    if "startup" in result:
        rows.extend(_startup_rows(result["startup"]))
    header: Row = ("profile", "measure", ENGINE, HAND, "ratio", "target", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)) + " |",
        "| " + " | ".join("-" * w for w in widths) + " |",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    return "\n".join(lines)
