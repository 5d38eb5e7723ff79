"""``python -m benchmarks``: every section on each profile, then the table and the JSON."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from . import batching, emits, report, sections, services, webhooks
from .app import TOKEN, Config, build
from .sections import FULL, QUICK, Context, Sizes
from .templates import TEMPLATES
from .world import create

__all__ = ["main"]

DEFAULT_JSON = Path("build") / "benchmarks" / "latest.json"
SECTIONS = (
    "throughput",
    "fanout",
    "emit",
    "sql",
    "startup",
    "scaleout",
    "io_bound",
    "webhooks",
    "emits",
    "batching",
)


_STARTED = time.monotonic()


def _say(message: str) -> None:
    print(
        f"[benchmarks] {time.monotonic() - _STARTED:6.1f} s  {message}", file=sys.stderr, flush=True
    )


@contextlib.contextmanager
def _services(profile: str, args: argparse.Namespace, postmark: str) -> Iterator[Config]:
    if profile == "postgres":
        with services.postgres(
            postmark, postgres_url=args.postgres_url, redis_url=args.redis_url
        ) as config:
            yield config
    else:
        with services.embedded(postmark) as config:
            yield config


def run_profile(
    profile: str,
    config: Config,
    sizes: Sizes,
    fake: services.TimedPostmark,
    logs: Path,
    *,
    only: frozenset[str] = frozenset(SECTIONS),
) -> dict[str, Any]:
    """Every section in ``only`` but start-up on one profile's services."""
    setup = build(config)
    findings = max(sizes.throughput_emails, max(sizes.io_pools) * sizes.io_emails_per_thread, 50)
    world = create(setup.engine, findings=findings, team_sizes=sizes.team_sizes)
    ctx = Context(profile, config, sizes, fake, world, setup, logs)
    result: dict[str, Any] = {}
    try:
        if only & {"throughput", "fanout", "scaleout"}:
            with sections.solo_workers(ctx) as (bench, workers):
                _say(f"{profile}: 1. per-email throughput")
                result["throughput"] = sections.throughput(ctx, bench, workers)
                if "fanout" in only:
                    _say(f"{profile}: 2. fan-out to {sizes.fanout_recipients} recipients")
                    result["fanout"] = sections.fanout(ctx, bench, workers)
                if "scaleout" in only:
                    _say(f"{profile}: 6. scale-out to 2 worker processes")
                    one = {s: result["throughput"][s] for s in (sections.ENGINE, sections.HAND)}
                    result["scaleout"] = sections.scale_out(ctx, bench, workers, one)
        alone = (
            ("emit", "3. emit() cost", sections.emit_cost),
            ("sql", "4. SQL statements per task run", sections.sql_statements),
            (
                "io_bound",
                f"7. I/O-bound sending ({sizes.io_latency * 1000:.0f} ms latency)",
                sections.io_bound,
            ),
            ("webhooks", "8. webhook records per second", webhooks.throughput),
            ("emits", "9. emit(session=) in one transaction", emits.in_transaction),
            ("batching", "10. cross-emit batching, on against off", batching.measure),
        )
        for key, label, measure in alone:
            if key in only:
                _say(f"{profile}: {label}")
                result[key] = measure(ctx)
    finally:
        ctx.close()
        setup.engine.dispose()
    return result


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue, with its figure and whether it is met, per profile."""
    found = []
    for profile, s in result["profiles"].items():
        sql = {"value": None, **s["sql"]["check"]} if "sql" in s else None
        checks = [
            (name, figure)
            for name, figure in (
                ("1 per-email throughput ratio", s.get("throughput", {}).get("ratio")),
                ("2 fan-out: fewer requests", s.get("fanout", {}).get("fewer_requests")),
                ("2 fan-out: less time", s.get("fanout", {}).get("less_time")),
                ("3 emit() / delay()", s.get("emit", {}).get("ratio")),
                ("4 SQL statements per run", sql),
                ("6 scale-out speed-up vs hand-written", s.get("scaleout", {}).get("ratio")),
            )
            if figure is not None
        ]
        for threads, pool in s.get("io_bound", {}).get("pools", {}).items():
            checks.append((f"7 {threads} threads, ratio", pool["ratio"]))
        if "scaling" in s.get("io_bound", {}):
            checks.append(
                ("7 speed-up with threads vs hand-written", s["io_bound"]["scaling"]["ratio"])
            )
        batched = s.get("batching", {})
        for ms, at in batched.get("latencies", {}).items():
            checks.append((f"10 batched vs hand-written at {ms} ms", at["on_vs_hand"]))
        for ms, at in batched.get("default_journal", {}).get("latencies", {}).items():
            checks.append(
                (f"10 batched vs hand-written at {ms} ms, SQLite default journal", at["on_vs_hand"])
            )
        if "low_load" in batched:
            checks.append(
                (
                    "10 low load: one emit to Postmark, on - off (ms)",
                    batched["low_load"]["difference_ms"],
                )
            )
        found += [
            {
                "profile": profile,
                "measure": name,
                "value": c.get("value"),
                "target": c["target"],
                "met": c["met"],
            }
            for name, c in checks
        ]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="emailevents against hand-written Celery tasks, side by side.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small run on the embedded defaults only (a smoke test, not a measurement)",
    )
    parser.add_argument(
        "--profile",
        choices=("all", "postgres", "embedded"),
        default=None,
        help="which services to run on (default: all; embedded with --quick)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run this section only (repeatable; 1 runs with 2 and 6, which need it)",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the JSON")
    parser.add_argument("--postgres-url", default=services.DEFAULT_POSTGRES_URL)
    parser.add_argument(
        "--redis-url",
        default=None,
        help="an existing Redis to use (default: a redis-server of our own on a free port)",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    profile = args.profile or ("embedded" if args.quick else "all")
    profiles = ["postgres", "embedded"] if profile == "all" else [profile]
    only = frozenset(args.only or SECTIONS)
    command = " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)])
    started = time.monotonic()
    result: dict[str, Any] = {
        "schema": 1,
        "command": command,
        "quick": args.quick,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": report.machine(),
        "sizes": sizes.__dict__,
        "profiles": {},
    }
    try:
        if "postgres" in profiles:
            result["machine"]["postgresql"] = services.describe_postgres(args.postgres_url)
        with (
            tempfile.TemporaryDirectory(prefix="emailevents-bench-") as tmp,
            services.TimedPostmark(
                tokens=(TOKEN,),
                templates=TEMPLATES,
                max_messages=max(10_000, sizes.fanout_recipients),
            ) as fake,
        ):
            for name in profiles:
                with _services(name, args, fake.url) as config:
                    result["profiles"][name] = run_profile(
                        name, config, sizes, fake, Path(tmp) / name, only=only
                    )
            if "startup" in only:
                _say("5. start-up")
                result["startup"] = sections.startup(sizes, Path(tmp))
    except (services.ServiceError, sa.exc.OperationalError) as exc:
        _say(f"cannot run: {exc}")
        return 2
    except BaseException as exc:
        # Keep what was measured before the failure, for the post-mortem.
        result["error"] = f"{type(exc).__name__}: {exc}"[:4000]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        _say(f"failed; what was measured is in {args.json}")
        raise
    result["duration_s"] = time.monotonic() - started
    result["targets"] = targets(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(report.table(result))
    missed = [t for t in result["targets"] if t["met"] is False]
    print(
        f"\n{len(result['targets']) - len(missed)} of {len(result['targets'])} targets met"
        + (
            " (a --quick run is a smoke test: its figures are not measurements)"
            if args.quick
            else ""
        )
        + f"; {result['duration_s']:.0f} s; JSON in {args.json}"
    )
    return 0
