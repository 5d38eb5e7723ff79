"""CPU seconds per test, for keeping the suite inside its budget.

    EMAILEVENTS_CPU_REPORT=/tmp/cpu.jsonl python3 -m pytest -p tests.cpu_report

Each test's CPU (the pytest process's own, plus the children it reaped: the Celery workers a
test starts) is appended to the file as one JSON line; the summary at the end lists the files and
tests that cost most. The suite is CPU-bound on two cores, so CPU seconds, not wall time, say
where to cut.
"""

from __future__ import annotations

import json
import os
import resource
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

REPORT = os.environ.get("EMAILEVENTS_CPU_REPORT", "")


def _cpu() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    before = _cpu()
    yield
    if REPORT:
        line = json.dumps({"test": item.nodeid, "cpu": round(_cpu() - before, 3)})
        with Path(REPORT).open("a") as report:
            report.write(line + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    path = Path(REPORT)
    if not REPORT or not path.exists() or hasattr(terminalreporter.config, "workerinput"):
        return
    tests = [json.loads(line) for line in path.read_text().splitlines() if line]
    files: defaultdict[str, float] = defaultdict(float)
    for test in tests:
        files[test["test"].split("::")[0]] += test["cpu"]
    write = terminalreporter.write_line
    write(f"CPU seconds: {sum(files.values()):.0f} in {len(tests)} tests ({REPORT})")
    for name, cpu in sorted(files.items(), key=lambda kv: -kv[1])[:12]:
        write(f"  {cpu:7.1f}  {name}")
    for test in sorted(tests, key=lambda t: -t["cpu"])[:20]:
        write(f"  {test['cpu']:7.1f}  {test['test']}")
