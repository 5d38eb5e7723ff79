"""``python -m benchmarks --quick`` runs and writes its JSON: a smoke test, never a timing check.

The quick run uses the embedded defaults only (a SQLite file, kombu's ``filesystem://`` transport,
worker processes of its own, the local Postmark-compatible server), so it needs no service.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
PROFILE_SECTIONS = {
    "throughput",
    "fanout",
    "emit",
    "sql",
    "scaleout",
    "io_bound",
    "webhooks",
    "emits",
    "batching",
}


def test_quick_benchmark_runs_and_writes_every_section(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    done = subprocess.run(  # noqa: S603 - this interpreter, our own module
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(output.read_text(encoding="utf-8"))

    assert result["quick"] is True
    assert set(result["profiles"]) == {"embedded"}
    sections = result["profiles"]["embedded"]
    assert set(sections) >= PROFILE_SECTIONS, sorted(sections)
    assert {"import emailevents", "lint against the local server"} <= set(result["startup"])
    assert result["startup"]["lint errors"] == 0
    for side in ("emailevents", "hand-written"):
        assert sections["throughput"][side]["median"] > 0
        assert sections["fanout"]["requests"][side]["median"] > 0
    # What the figures count, not how fast: the batch API and one request per recipient.
    recipients = sections["fanout"]["recipients"]
    assert sections["fanout"]["requests"]["hand-written"]["median"] == recipients
    assert sections["fanout"]["requests"]["emailevents"]["median"] == -(-recipients // 500)
    assert sections["sql"]["check"]["other_statements_constant"] is True
    assert {t["measure"] for t in result["targets"]} >= {"1 per-email throughput ratio"}
    # Every webhook post answered 200, each record stored once, its repeats told apart.
    webhooks = sections["webhooks"]
    posts = webhooks["posts_per_batch"] * result["sizes"]["repeats"]
    for side in ("wsgi_app() in-process", "emailevents serve over HTTP"):
        assert webhooks[side]["median"] > 0
        assert webhooks["recorded"][side] == {"stored": posts * 4 // 5, "duplicate": posts // 5}
    assert webhooks["INSERT + commit"]["median"] > 0
    # emit(session=): the statements on emailevents_emits do not grow with a transaction's
    # emits (one INSERT, then one check and one mark after the commit); each is published.
    emits = sections["emits"]
    assert emits["many"]["emits"] == result["sizes"]["transaction_emits"]
    for row in emits["round_trips"]:
        assert row["emit_statements"] == 3, row
        assert row["published"] == row["emits"], row
    assert emits["one"]["counts"]["plain"]["emit_statements"] == 0
    # Section 10: batching's figures are there (not how fast), on SQLite's default journal too,
    # and one emit at a time to the server, on and off, once per repetition.
    batching = sections["batching"]
    assert set(batching["latencies"]) == {"0", "100"}
    assert batching["default_journal"]["journal_mode"] == "delete"
    assert batching["default_journal"]["latencies"]["0"]["on_vs_hand"]["value"] > 0
    low = batching["low_load"]
    for side in ("emailevents, batched", "emailevents"):
        assert low[side]["n"] == result["sizes"]["repeats"]
        assert low[side]["median"] > 0
    assert low["difference_ms"]["target"] == "<= 50 ms (the window)"
    assert {t["measure"] for t in result["targets"]} >= {
        "10 batched vs hand-written at 0 ms, SQLite default journal",
        "10 low load: one emit to Postmark, on - off (ms)",
    }
    # The table is printed, with a line per section.
    for label in (
        "1 per-email throughput",
        "2 fan-out",
        "3 emit()",
        "4 SQL/run",
        "5 import",
        "6 scale-out",
        "7 100 ms latency",
        "8 webhook records/s",
        "9 round trips",
        "10 batched vs hand-written, 0 ms latency, SQLite default journal",
        "10 one emit to Postmark at low load",
    ):
        assert label in done.stdout, label
